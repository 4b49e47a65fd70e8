//! Query-complexity limits: SQL too deep or too large to plan safely is refused before planning.
//!
//! DataFusion plans recursively, and some of its passes (derived `Clone`/`Hash`/`Drop` of
//! expression trees) have no stack protection, so a 4 KB query of 2,000 chained `+` overflows
//! any normal stack. Query threads have large stacks; these limits keep the deepest accepted
//! query far inside them, and keep planning time and memory small (planning cost grows faster
//! than linearly with the number of query blocks and joins: 200 joined tables took 9 s to
//! plan here, 400 took two minutes).

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Select, TableFactor, Visit, Visitor};

use super::error::ServiceError;

/// Deepest expression nesting accepted (`1+1+…+1` with N terms nests N deep).
pub const MAX_EXPRESSION_DEPTH: usize = 500;
/// Most SELECT blocks in one statement (UNION branches, CTEs and subqueries each count).
pub const MAX_SELECTS: usize = 500;
/// Most table references (tables, subqueries, table functions in FROM and JOIN) in one
/// statement; join planning cost grows roughly with the cube of their number.
pub const MAX_TABLE_REFERENCES: usize = 128;

/// Refuses a statement over the limits with INVALID_ARGUMENT ("query too complex: …").
pub fn check(statement: &DfStatement) -> Result<(), ServiceError> {
    let DfStatement::Statement(statement) = statement else {
        // CREATE EXTERNAL TABLE, COPY, EXPLAIN wrappers: no expressions worth measuring.
        return match statement {
            DfStatement::Explain(explain) => check(&explain.statement),
            _ => Ok(()),
        };
    };
    let mut meter = Meter::default();
    match statement.visit(&mut meter) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(reason) => Err(ServiceError::InvalidRequest(format!(
            "query too complex: {reason}"
        ))),
    }
}

/// Measures nesting depth and SELECT count while the AST is walked, stopping at the first limit.
#[derive(Default)]
struct Meter {
    depth: usize,
    selects: usize,
    tables: usize,
}

impl Visitor for Meter {
    type Break = String;

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<String> {
        self.depth += 1;
        if self.depth > MAX_EXPRESSION_DEPTH {
            return ControlFlow::Break(format!(
                "expressions nest more than {MAX_EXPRESSION_DEPTH} deep (long chains of \
                 AND/OR/+/|| count one level per operator; write `x IN (a, b, …)` instead of \
                 long OR chains)"
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<String> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, _select: &Select) -> ControlFlow<String> {
        self.selects += 1;
        if self.selects > MAX_SELECTS {
            return ControlFlow::Break(format!(
                "more than {MAX_SELECTS} SELECT blocks (UNION branches, CTEs and subqueries)"
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, _table: &TableFactor) -> ControlFlow<String> {
        self.tables += 1;
        if self.tables > MAX_TABLE_REFERENCES {
            return ControlFlow::Break(format!(
                "more than {MAX_TABLE_REFERENCES} table references (tables, subqueries and \
                 table functions in FROM and JOIN)"
            ));
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;

    use super::*;

    fn verdict(sql: &str) -> Result<(), ServiceError> {
        let mut statements = DFParser::parse_sql(sql).unwrap();
        check(&statements.pop_front().unwrap())
    }

    #[test]
    fn ordinary_queries_pass() {
        verdict("SELECT id, length(sequence) FROM t WHERE id IN ('a', 'b') OR x > 1 + 2").unwrap();
        let chain = vec!["1"; MAX_EXPRESSION_DEPTH - 1].join(" + ");
        verdict(&format!("SELECT {chain}")).unwrap();
    }

    /// Runs `test` on a thread with a query thread's stack: the test builds deep trees.
    fn on_query_stack(test: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(super::super::executor::QUERY_THREAD_STACK)
            .spawn(test)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn deep_chains_and_huge_unions_are_too_complex() {
        on_query_stack(deep_chains_and_huge_unions);
    }

    fn deep_chains_and_huge_unions() {
        let chain = vec!["1"; 2000].join(" + ");
        let error = verdict(&format!("SELECT {chain}")).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(
            error
                .to_string()
                .starts_with("query too complex: expressions nest")
        );
        let union = (0..600)
            .map(|i| format!("SELECT {i}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let error = verdict(&union).unwrap_err();
        assert!(error.to_string().contains("SELECT blocks"), "{error}");
        let joins = (1..200)
            .map(|i| format!("JOIN t t{i} ON t{i}.x = t{}.x", i - 1))
            .collect::<Vec<_>>()
            .join(" ");
        let error = verdict(&format!("SELECT count(*) FROM t t0 {joins}")).unwrap_err();
        assert!(error.to_string().contains("table references"), "{error}");
    }
}
