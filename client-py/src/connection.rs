//! The Python-facing classes: `connect`, `Connection` and the lazily fetched `QueryResult`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arrow::array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use arrow::pyarrow::{FromPyArrow, IntoPyArrow, ToPyArrow};
use arrow_flight::sql::{
    CommandStatementIngest, TableDefinitionOptions, TableExistsOption, TableNotExistOption,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyCapsule, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString,
};

use crate::client::{FlightSqlClient, PreparedStatement, QueryPlan, TableInfo, bearer_header};
use crate::endpoint::{ConnectOptions, FlightUri, OptionError};
use crate::error::{ClientError, raise};
use crate::runtime::run;
use crate::session::{OptionValue, SessionOptionValue, StringListValue};
use crate::stream::{BatchStream, FlightBatchReader};

impl From<OptionError> for PyErr {
    fn from(error: OptionError) -> Self {
        PyValueError::new_err(error.0)
    }
}

/// Opens a connection to a Flight SQL server.
#[pyfunction]
#[pyo3(signature = (
    uri = "grpc://localhost:50051",
    *,
    username = None,
    password = None,
    token = None,
    headers = None,
    tls_root_certs = None,
    tls_cert_chain = None,
    tls_private_key = None,
    timeout = None,
))]
#[allow(clippy::too_many_arguments)]
pub fn connect(
    py: Python<'_>,
    uri: &str,
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
    headers: Option<&Bound<'_, PyAny>>,
    tls_root_certs: Option<&Bound<'_, PyAny>>,
    tls_cert_chain: Option<&Bound<'_, PyAny>>,
    tls_private_key: Option<&Bound<'_, PyAny>>,
    timeout: Option<f64>,
) -> PyResult<Connection> {
    let uri = FlightUri::parse(uri)?;
    let timeout = match timeout {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            return Err(PyValueError::new_err(format!(
                "timeout must be a positive number of seconds, got {t}"
            )));
        }
    };
    let pem =
        |value: Option<&Bound<'_, PyAny>>, name| value.map(|v| pem_bytes(v, name)).transpose();
    let tls_root_certs = pem(tls_root_certs, "tls_root_certs")?;
    let tls_identity = match (
        pem(tls_cert_chain, "tls_cert_chain")?,
        pem(tls_private_key, "tls_private_key")?,
    ) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(PyValueError::new_err(
                "tls_cert_chain and tls_private_key go together",
            ));
        }
    };
    if (tls_root_certs.is_some() || tls_identity.is_some()) && !uri.tls {
        return Err(PyValueError::new_err(
            "tls_root_certs, tls_cert_chain and tls_private_key need a grpc+tls:// URI",
        ));
    }
    let mut options = ConnectOptions {
        uri,
        tls_root_certs,
        tls_identity,
        timeout,
        headers: Default::default(),
    };
    if let Some(headers) = headers {
        let headers = headers.cast::<PyMapping>().map_err(|_| {
            PyTypeError::new_err("headers must be a mapping of header names to values")
        })?;
        for item in headers.items()?.iter() {
            let (name, value): (String, String) = item
                .extract()
                .map_err(|_| PyTypeError::new_err("headers must map str names to str values"))?;
            options.add_header(&name, &value)?;
        }
    }
    let basic_auth = match (username, password, &token) {
        (Some(_), _, Some(_)) => {
            return Err(PyValueError::new_err(
                "give either username/password or token, not both",
            ));
        }
        (Some(user), Some(pass), None) => Some((user, pass)),
        (Some(_), None, None) | (None, Some(_), _) => {
            return Err(PyValueError::new_err("username and password go together"));
        }
        (None, None, _) => None,
    };
    if let Some(token) = &token {
        let value = bearer_header(token)
            .ok_or_else(|| PyValueError::new_err("token must be printable ASCII"))?;
        options.headers.insert("authorization", value);
    }
    let client = run(py, async {
        let auth = basic_auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        FlightSqlClient::connect(&options, auth).await
    })?;
    Ok(Connection {
        uri: options.uri.original.clone(),
        state: Mutex::new(ConnectionState {
            client: Some(client),
            registered_tables: Vec::new(),
        }),
    })
}

/// PEM given as text or bytes, or the contents of the file a path (`str` without a PEM block,
/// or `os.PathLike`) names.
fn pem_bytes(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<u8>> {
    const PEM_BEGIN: &[u8] = b"-----BEGIN ";
    let contains_pem = |bytes: &[u8]| bytes.windows(PEM_BEGIN.len()).any(|w| w == PEM_BEGIN);
    let path: PathBuf = if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    } else if let Ok(text) = value.cast::<PyString>() {
        let text = text.extract::<String>()?;
        if contains_pem(text.as_bytes()) {
            return Ok(text.into_bytes());
        }
        text.into()
    } else if let Ok(path) = value.extract::<PathBuf>() {
        path
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be PEM text (str or bytes) or the path of a PEM file"
        )));
    };
    let bytes = std::fs::read(&path).map_err(|e| {
        PyValueError::new_err(format!(
            "{name}: not PEM text, and cannot read it as a file {}: {e}",
            path.display()
        ))
    })?;
    if !contains_pem(&bytes) {
        return Err(PyValueError::new_err(format!(
            "{name}: {} holds no PEM block (-----BEGIN ...)",
            path.display()
        )));
    }
    Ok(bytes)
}

struct ConnectionState {
    /// `None` once closed.
    client: Option<FlightSqlClient>,
    /// Tables registered by `read_*_file`, dropped on close.
    registered_tables: Vec<String>,
}

/// A connection to a Flight SQL server.
#[pyclass(frozen, module = "flightbear")]
pub struct Connection {
    uri: String,
    state: Mutex<ConnectionState>,
}

/// Makes table names unique within this process.
static TABLE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Connection {
    fn state(&self) -> MutexGuard<'_, ConnectionState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn client(&self, py: Python<'_>) -> PyResult<FlightSqlClient> {
        self.state()
            .client
            .clone()
            .ok_or_else(|| ClientError::Closed.into_pyerr(py))
    }

    /// Registers a server-side file as a fresh table and returns all its rows.
    fn read_file(
        &self,
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        stored_as: &str,
        options: &[(&str, String)],
    ) -> PyResult<QueryResult> {
        let path = absolute_path(path)?;
        let table = format!(
            "flightbear_{}_{}_{}",
            stored_as.to_ascii_lowercase(),
            std::process::id(),
            TABLE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut ddl = format!(
            "CREATE EXTERNAL TABLE \"{table}\" STORED AS {stored_as} LOCATION {}",
            sql_string(&path)
        );
        if !options.is_empty() {
            let pairs: Vec<String> = options
                .iter()
                .map(|(k, v)| format!("{} {}", sql_string(k), sql_string(v)))
                .collect();
            ddl.push_str(&format!(" OPTIONS ({})", pairs.join(", ")));
        }
        let client = self.client(py)?;
        run(py, client.execute_update(&ddl))?;
        self.state().registered_tables.push(table.clone());
        self.sql(py, &format!("SELECT * FROM \"{table}\""), None)
    }

    fn table_infos(&self, py: Python<'_>) -> PyResult<Vec<TableInfo>> {
        let client = self.client(py)?;
        run(py, async move { client.tables().await })
    }
}

#[pymethods]
impl Connection {
    /// Plans `query` on the server and returns its (not yet fetched) result.
    #[pyo3(signature = (query, parameters = None))]
    fn sql(
        &self,
        py: Python<'_>,
        query: &str,
        parameters: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<QueryResult> {
        let client = self.client(py)?;
        let parameters = match parameters {
            Some(p) => parameter_batch(p)?,
            None => None,
        };
        let (plan, prepared) = match parameters {
            None => (run(py, client.plan_statement(query))?, None),
            Some(batch) => {
                let (plan, prepared) = run(py, client.plan_prepared(query, batch))?;
                (plan, Some(Arc::new(prepared)))
            }
        };
        Ok(QueryResult {
            client,
            plan,
            prepared,
        })
    }

    /// Runs a statement that returns no rows (DDL/DML) and returns the affected-row count.
    fn execute(&self, py: Python<'_>, statement: &str) -> PyResult<i64> {
        let client = self.client(py)?;
        run(py, async move { client.execute_update(statement).await })
    }

    /// Registers a FASTA file on the server (its path there) and returns all its rows.
    fn read_fasta_file(&self, py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<QueryResult> {
        self.read_file(py, path, "FASTA", &[])
    }

    /// Registers a CSV file on the server (its path there) and returns all its rows.
    #[pyo3(signature = (path, *, has_header = true, delimiter = ","))]
    fn read_csv_file(
        &self,
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        has_header: bool,
        delimiter: &str,
    ) -> PyResult<QueryResult> {
        if delimiter.len() != 1 {
            return Err(PyValueError::new_err(format!(
                "delimiter must be a single ASCII character, got {delimiter:?}"
            )));
        }
        let options = [
            ("format.has_header", has_header.to_string()),
            ("format.delimiter", delimiter.to_string()),
        ];
        self.read_file(py, path, "CSV", &options)
    }

    /// Uploads `data` as table `name` on the server (Flight SQL bulk ingest, streamed batch
    /// by batch) and returns the number of rows ingested. `data` is anything with
    /// `__arrow_c_stream__`: a pyarrow Table or RecordBatchReader, a polars or pandas-backed
    /// Arrow object. `mode` is `create` (the table must not exist), `append` (it must),
    /// `replace` or `create_append`. A `temporary` table lives in this connection's session
    /// only, in the server's memory.
    #[pyo3(signature = (name, data, *, mode = "create", temporary = false))]
    fn ingest(
        &self,
        py: Python<'_>,
        name: &str,
        data: &Bound<'_, PyAny>,
        mode: &str,
        temporary: bool,
    ) -> PyResult<i64> {
        let command = ingest_command(name, mode, temporary)?;
        if !data.hasattr("__arrow_c_stream__")? {
            return Err(PyTypeError::new_err(format!(
                "ingest takes Arrow data (an object with __arrow_c_stream__, such as a \
                 pyarrow.Table or RecordBatchReader), not {}",
                data.get_type().name()?
            )));
        }
        let reader = ArrowArrayStreamReader::from_pyarrow_bound(data)?;
        let schema = reader.schema();
        let client = self.client(py)?;
        // The source is read on a thread of its own (it may call back into Python, which
        // takes the GIL), a few batches ahead of the upload.
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        std::thread::Builder::new()
            .name("flightbear-ingest".into())
            .spawn(move || {
                for batch in reader {
                    if sender
                        .blocking_send(batch.map_err(ClientError::from))
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the upload: {e}")))?;
        let batches = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        });
        run(py, client.ingest(command, schema, batches))
    }

    /// The names of the server's tables and views, without the SQL standard's
    /// `information_schema` views (`table_schema` still finds those).
    fn tables(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        Ok(self
            .table_infos(py)?
            .into_iter()
            .filter(|t| t.db_schema.as_deref() != Some("information_schema"))
            .map(|t| t.name)
            .collect())
    }

    /// The Arrow schema of a table, by name (optionally qualified as `schema.table`).
    fn table_schema<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let tables = self.table_infos(py)?;
        let found = tables.iter().find(|t| t.name == name).or_else(|| {
            tables.iter().find(|t| {
                let schema = t.db_schema.as_deref().unwrap_or_default();
                let catalog = t.catalog.as_deref().unwrap_or_default();
                name == format!("{schema}.{}", t.name)
                    || name == format!("{catalog}.{schema}.{}", t.name)
            })
        });
        match found {
            Some(table) => table.schema.to_pyarrow(py),
            None => Err(raise(
                py,
                "NotFoundError",
                &format!("table '{name}' not found"),
                None,
            )),
        }
    }

    /// Closes the connection (idempotent); tables registered by `read_*_file` are dropped.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let (client, tables) = {
            let mut state = self.state();
            (
                state.client.take(),
                std::mem::take(&mut state.registered_tables),
            )
        };
        if let Some(client) = client {
            // Best effort: the server may already be gone.
            let _ = run(py, async move {
                for table in tables {
                    let _ = client
                        .execute_update(&format!("DROP TABLE IF EXISTS \"{table}\""))
                        .await;
                }
                let _ = client.close_session().await;
                Ok(())
            });
        }
        Ok(())
    }

    /// The session's options: the current `catalog` and `schema`, and every setting this
    /// connection changed (with `set_session_options` or a `SET` statement).
    fn session_options<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let client = self.client(py)?;
        let options = run(py, async move { client.session_options().await })?;
        let dict = PyDict::new(py);
        let mut names: Vec<_> = options.keys().cloned().collect();
        names.sort();
        for name in names {
            let value = match options[&name].option_value.clone() {
                None => py.None().into_bound(py),
                Some(OptionValue::StringValue(text)) => text.into_pyobject(py)?.into_any(),
                Some(OptionValue::BoolValue(flag)) => flag.into_pyobject(py)?.to_owned().into_any(),
                Some(OptionValue::Int64Value(number)) => number.into_pyobject(py)?.into_any(),
                Some(OptionValue::DoubleValue(number)) => number.into_pyobject(py)?.into_any(),
                Some(OptionValue::StringListValue(list)) => {
                    PyList::new(py, list.values)?.into_any()
                }
            };
            dict.set_item(name, value)?;
        }
        Ok(dict)
    }

    /// Sets session options (`catalog`, `schema`, or a DataFusion setting such as
    /// `datafusion.execution.time_zone`) for this connection's later statements only. Values
    /// are str, bool, int, float or a list of str. Options the server refuses are named in the
    /// raised `InvalidQueryError`; the others are set.
    fn set_session_options(&self, py: Python<'_>, options: &Bound<'_, PyAny>) -> PyResult<()> {
        let options = options
            .cast::<PyMapping>()
            .map_err(|_| PyTypeError::new_err("session options are a mapping of name to value"))?;
        let mut values = HashMap::new();
        for item in options.items()?.iter() {
            let (name, value): (String, Bound<'_, PyAny>) = item.extract()?;
            values.insert(name.clone(), option_value(&name, &value)?);
        }
        let client = self.client(py)?;
        let refused = run(py, async move { client.set_session_options(values).await })?;
        if refused.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = refused
            .iter()
            .map(|(name, reason)| format!("{name} ({reason})"))
            .collect();
        Err(raise(
            py,
            "InvalidQueryError",
            &format!("the server refused session options: {}", names.join(", ")),
            None,
        ))
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.state().client.is_none()
    }

    /// The URI this connection was opened with.
    #[getter]
    fn uri(&self) -> &str {
        &self.uri
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc_value: &Bound<'_, PyAny>,
        _traceback: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let status = if self.closed() { " closed" } else { "" };
        format!("<flightbear.Connection {}{status}>", self.uri)
    }
}

/// A query's result: its schema is known, its rows are fetched when asked for.
///
/// Each `to_*` call (and each `__arrow_c_stream__`) fetches the rows again from the server.
#[pyclass(frozen, module = "flightbear")]
pub struct QueryResult {
    client: FlightSqlClient,
    plan: QueryPlan,
    /// Kept open while the result can still be fetched.
    prepared: Option<Arc<PreparedStatement>>,
}

impl QueryResult {
    fn stream(&self, py: Python<'_>) -> PyResult<BatchStream> {
        BatchStream::start(
            self.client.clone(),
            self.plan.clone(),
            self.prepared.clone(),
        )
        .map_err(|e| e.into_pyerr(py))
    }

    fn reader(&self, py: Python<'_>) -> PyResult<Box<dyn RecordBatchReader + Send>> {
        Ok(Box::new(FlightBatchReader::new(self.stream(py)?)))
    }
}

#[pymethods]
impl QueryResult {
    /// The result's schema as a `pyarrow.Schema`.
    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.plan.schema.to_pyarrow(py)
    }

    /// A `pyarrow.RecordBatchReader` that fetches batches from the server as it is read.
    fn to_arrow_record_batch_reader<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.reader(py)?.into_pyarrow(py)
    }

    /// Fetches every row into a `pyarrow.Table`.
    fn to_arrow_table<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut stream = self.stream(py)?;
        let batches = py
            .detach(|| {
                let mut batches: Vec<RecordBatch> = Vec::new();
                while let Some(batch) = stream.next_batch() {
                    batches.push(batch?);
                }
                Ok(batches)
            })
            .map_err(|e: ClientError| e.into_pyerr(py))?;
        let reader: Box<dyn RecordBatchReader + Send> = Box::new(RecordBatchIterator::new(
            batches.into_iter().map(Ok),
            self.plan.schema.clone(),
        ));
        reader.into_pyarrow(py)?.call_method0("read_all")
    }

    /// Fetches every row into a `pandas.DataFrame` (keyword arguments go to `Table.to_pandas`).
    #[pyo3(signature = (**kwargs))]
    fn to_pandas<'py>(
        &self,
        py: Python<'py>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.to_arrow_table(py)?
            .call_method("to_pandas", (), kwargs)
    }

    /// Iterates over the result's `pyarrow.RecordBatch`es as they arrive.
    fn __iter__(&self, py: Python<'_>) -> PyResult<BatchIterator> {
        Ok(BatchIterator {
            stream: Mutex::new(Some(self.stream(py)?)),
        })
    }

    /// Exports the rows as an Arrow C stream (the Arrow PyCapsule interface).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // The requested schema is a hint the producer may ignore; the data keeps its own.
        let _ = requested_schema;
        let stream = FFI_ArrowArrayStream::new(self.reader(py)?);
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }

    fn __repr__(&self) -> String {
        let columns: Vec<String> = self
            .plan
            .schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        format!("<flightbear.QueryResult [{}]>", columns.join(", "))
    }
}

/// Iterator over a result's record batches, raising `flightbear` exceptions on failure.
#[pyclass(module = "flightbear")]
pub struct BatchIterator {
    stream: Mutex<Option<BatchStream>>,
}

#[pymethods]
impl BatchIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        // Blocking on the lock while holding the GIL could deadlock with the thread that waits
        // (GIL released) inside; one iterator is for one thread at a time.
        let mut guard = match self.stream.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "this result iterator is being read by another thread",
                ));
            }
        };
        let Some(stream) = guard.as_mut() else {
            return Ok(None);
        };
        let next = match stream.ready() {
            Some(ready) => ready,
            None => py.detach(|| stream.next_batch()),
        };
        match next {
            Some(Ok(batch)) => batch.to_pyarrow(py).map(Some),
            Some(Err(e)) => {
                *guard = None;
                Err(e.into_pyerr(py))
            }
            None => {
                *guard = None;
                Ok(None)
            }
        }
    }
}

/// A path as absolute text: a relative path is taken from the client's working directory.
fn absolute_path(path: &Bound<'_, PyAny>) -> PyResult<String> {
    let os = path.py().import("os")?;
    let text = os
        .call_method1("fspath", (path,))
        .map_err(|_| PyTypeError::new_err("path must be a str or os.PathLike"))?;
    let text = text
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("path must be text, not bytes"))?;
    let absolute = os.getattr("path")?.call_method1("abspath", (text,))?;
    absolute.extract()
}

/// A SQL string literal.
fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Turns `parameters` (a sequence of Python values, or a one-row pyarrow RecordBatch) into a
/// batch; an empty sequence means no parameters.
/// A Python value as a session option value.
fn option_value(name: &str, value: &Bound<'_, PyAny>) -> PyResult<SessionOptionValue> {
    let option = if value.is_instance_of::<PyBool>() {
        OptionValue::BoolValue(value.extract()?)
    } else if value.is_instance_of::<PyInt>() {
        OptionValue::Int64Value(value.extract()?)
    } else if value.is_instance_of::<PyFloat>() {
        OptionValue::DoubleValue(value.extract()?)
    } else if value.is_instance_of::<PyString>() {
        OptionValue::StringValue(value.extract()?)
    } else if let Ok(values) = value.extract::<Vec<String>>() {
        OptionValue::StringListValue(StringListValue { values })
    } else {
        return Err(PyTypeError::new_err(format!(
            "session option {name:?} must be str, bool, int, float or a list of str"
        )));
    };
    Ok(SessionOptionValue {
        option_value: Some(option),
    })
}

/// The ingest command for table `name` in ADBC's mode `mode`.
fn ingest_command(name: &str, mode: &str, temporary: bool) -> PyResult<CommandStatementIngest> {
    use TableExistsOption as Exists;
    use TableNotExistOption as Missing;
    let (if_not_exist, if_exists) = match mode {
        "create" => (Missing::Create, Exists::Fail),
        "append" => (Missing::Fail, Exists::Append),
        "replace" => (Missing::Create, Exists::Replace),
        "create_append" => (Missing::Create, Exists::Append),
        other => {
            return Err(PyValueError::new_err(format!(
                "mode must be 'create', 'append', 'replace' or 'create_append', not {other:?}"
            )));
        }
    };
    Ok(CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: if_not_exist.into(),
            if_exists: if_exists.into(),
        }),
        table: name.to_string(),
        temporary,
        ..Default::default()
    })
}

fn parameter_batch(parameters: &Bound<'_, PyAny>) -> PyResult<Option<RecordBatch>> {
    let py = parameters.py();
    if parameters.hasattr("__arrow_c_array__")? {
        return RecordBatch::from_pyarrow_bound(parameters).map(Some);
    }
    if parameters.is_instance_of::<PyString>()
        || parameters.is_instance_of::<PyBytes>()
        || parameters.cast::<PyMapping>().is_ok()
    {
        return Err(PyTypeError::new_err(
            "parameters must be a sequence of values (for ? or $1, $2, ... placeholders) or a \
             one-row pyarrow.RecordBatch",
        ));
    }
    let values: Vec<Bound<'_, PyAny>> = parameters
        .try_iter()
        .map_err(|_| PyTypeError::new_err("parameters must be a sequence of values"))?
        .collect::<PyResult<_>>()?;
    if values.is_empty() {
        return Ok(None);
    }
    let pyarrow = py.import("pyarrow")?;
    let arrays = PyList::empty(py);
    let names = PyList::empty(py);
    for (index, value) in values.iter().enumerate() {
        let array = pyarrow
            .call_method1("array", (PyList::new(py, [value])?,))
            .map_err(|e| {
                PyTypeError::new_err(format!(
                    "parameter {} ({}) has no Arrow type: {e}",
                    index + 1,
                    value.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
        arrays.append(array)?;
        names.append(format!("${}", index + 1))?;
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("names", names)?;
    let batch = pyarrow.call_method("record_batch", (arrays,), Some(&kwargs))?;
    RecordBatch::from_pyarrow_bound(&batch).map(Some)
}
