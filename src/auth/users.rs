//! The users file: names, argon2 password hashes (PHC strings) and roles, and checking a password against them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Deserialize;

use super::{Identity, Role};

/// Why the users file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file cannot be read.
    #[error("cannot read the users file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("users file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key or user.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    role: Role,
}

/// The users allowed to log in.
#[derive(Debug, Clone)]
pub struct Users {
    by_name: HashMap<String, (String, Role)>,
}

/// A hash to verify against when the user does not exist, so an unknown name takes as long
/// as a wrong password and the answer time does not reveal which names exist.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_password("flightbear does not know this user")
        .unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$".to_string())
});

impl Users {
    /// Reads a users file: `[[users]]` tables with `name`, `password_hash` (an argon2 PHC
    /// string, as `flightbear hash-password` prints) and `role` (`reader` or `admin`).
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |message: String| UsersError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file: UsersFile =
            toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
        let mut by_name = HashMap::new();
        for entry in file.users {
            if entry.name.is_empty() || entry.name.contains(':') {
                return Err(invalid(format!(
                    "user name '{}' must be non-empty and contain no ':'",
                    entry.name
                )));
            }
            let parsed = PasswordHash::new(&entry.password_hash).map_err(|e| {
                invalid(format!(
                    "password_hash of user '{}' is not a PHC string ({e}); make one with \
                     `flightbear hash-password`",
                    entry.name
                ))
            })?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(invalid(format!(
                    "password_hash of user '{}' uses {}, not argon2",
                    entry.name, parsed.algorithm
                )));
            }
            if by_name
                .insert(entry.name.clone(), (entry.password_hash, entry.role))
                .is_some()
            {
                return Err(invalid(format!("user '{}' appears twice", entry.name)));
            }
        }
        if by_name.is_empty() {
            return Err(invalid("no [[users]] entries".into()));
        }
        Ok(Self { by_name })
    }

    /// Checks a password (slow on purpose: run it off the async runtime). `None` for an
    /// unknown user or a wrong password, which take the same time.
    pub fn verify(&self, name: &str, password: &str) -> Option<Identity> {
        let (hash, role) = match self.by_name.get(name) {
            Some((hash, role)) => (hash.as_str(), Some(*role)),
            None => (DUMMY_HASH.as_str(), None),
        };
        let parsed = PasswordHash::new(hash).ok()?;
        // argon2 compares the computed and stored hashes in constant time.
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        match (matches, role) {
            (true, Some(role)) => Some(Identity::user(name, role)),
            _ => None,
        }
    }

    /// The current role of a user, if the user still exists.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.by_name.get(name).map(|(_, role)| *role)
    }
}

/// An argon2id PHC string for `password` with a random salt (what `flightbear hash-password` prints).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users_file(entries: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, entries).unwrap();
        (dir, path)
    }

    #[test]
    fn passwords_are_checked_against_their_hash_and_roles_come_along() {
        let admin = hash_password("s3cret").unwrap();
        let reader = hash_password("hunter2").unwrap();
        let (_dir, path) = users_file(&format!(
            "[[users]]\nname = \"ada\"\npassword_hash = \"{admin}\"\nrole = \"admin\"\n\n\
             [[users]]\nname = \"rex\"\npassword_hash = \"{reader}\"\nrole = \"reader\"\n"
        ));
        let users = Users::load(&path).unwrap();
        assert_eq!(
            users.verify("ada", "s3cret"),
            Some(Identity::user("ada", Role::Admin))
        );
        assert_eq!(
            users.verify("rex", "hunter2"),
            Some(Identity::user("rex", Role::Reader))
        );
        assert_eq!(users.verify("ada", "hunter2"), None);
        assert_eq!(users.verify("nobody", "s3cret"), None);
        assert_eq!(users.role_of("rex"), Some(Role::Reader));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let (_dir, path) = users_file(
            "[[users]]\nname = \"ada\"\npassword_hash = \"plaintext\"\nrole = \"admin\"\n",
        );
        let error = Users::load(&path).unwrap_err().to_string();
        assert!(error.contains("'ada' is not a PHC string"), "{error}");
        let (_dir, path) =
            users_file("[[users]]\nname = \"ada\"\npassword_hash = \"x\"\nrole = \"root\"\n");
        let error = Users::load(&path).unwrap_err().to_string();
        assert!(error.contains("root"), "{error}");
        let (_dir, path) = users_file("[[users]]\nname = \"ada\"\npasword_hash = \"x\"\n");
        let error = Users::load(&path).unwrap_err().to_string();
        assert!(error.contains("pasword_hash"), "{error}");
    }
}
