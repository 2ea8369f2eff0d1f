//! Typed errors. Every variant names the file it is about and, where there is one, the place in it
//! (JSON line/column, TOML span, JSON pointer, record index), so a bad input can be fixed without
//! a debugger. All of them map to exit code 2 ("bad input"), never to 1 ("vulnerabilities found").

use std::path::PathBuf;

/// Errors of the library; `main.rs` prints the whole chain and maps them to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: not valid JSON: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: not valid TOML{place}: {message}")]
    Toml {
        path: PathBuf,
        place: String,
        message: String,
    },
    #[error("{path}: {place}: {message}")]
    Invalid {
        path: PathBuf,
        place: String,
        message: String,
    },
    #[error("{path}: unknown format: {hint}")]
    UnknownFormat { path: PathBuf, hint: String },
    #[error("snapshot {path}: {message}")]
    Snapshot { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(
        path: impl Into<PathBuf>,
        place: impl Into<String>,
        message: impl ToString,
    ) -> Self {
        Error::Invalid {
            path: path.into(),
            place: place.into(),
            message: message.to_string(),
        }
    }

    pub fn json(path: impl Into<PathBuf>, e: &serde_json::Error) -> Self {
        // serde_json puts " at line L column C" into Display; keep only the message part.
        let full = e.to_string();
        let message = match full.rfind(" at line ") {
            Some(i) => full[..i].to_string(),
            None => full,
        };
        Error::Json {
            path: path.into(),
            line: e.line(),
            column: e.column(),
            message,
        }
    }

    pub fn toml(path: impl Into<PathBuf>, text: &str, e: &toml::de::Error) -> Self {
        let place = match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" at line {line}, column {column}")
            }
            None => String::new(),
        };
        Error::Toml {
            path: path.into(),
            place,
            message: e.message().to_string(),
        }
    }
}

/// Reads a whole file, naming it on failure.
pub fn read_to_string(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses JSON text into `T`, naming the file, line and column on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(path: &std::path::Path, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::json(path, &e))
}
