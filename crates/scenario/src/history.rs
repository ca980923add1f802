//! A history in memory and as `history.jsonl`: the [`Header`] on the first line, then one
//! [`Event`] per line, so a run interrupted half-way still leaves every line it wrote.

use std::io::{BufRead, Write};
use std::path::Path;

use wire::history::{Event, Header, Op};

/// File name of a history inside a run folder.
pub const HISTORY_FILE: &str = "history.jsonl";

/// Everything recorded in one run.
#[derive(Clone, Debug, PartialEq)]
pub struct History {
    pub header: Header,
    pub events: Vec<Event>,
}

impl History {
    /// The client's reads, in the order they were recorded.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.events.iter().filter_map(|event| match event {
            Event::Op(op) => Some(op),
            _ => None,
        })
    }
}

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: not a history line ({source}); was it written by `cargo xtask scenario`?"
    )]
    Line {
        path: String,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{0} is empty; a history starts with its header line")]
    Empty(String),
}

impl History {
    /// The history as JSON lines.
    pub fn to_jsonl(&self) -> String {
        let mut text = String::new();
        // Plain data with string keys: encoding cannot fail.
        text.push_str(&serde_json::to_string(&self.header).expect("a header encodes"));
        text.push('\n');
        for event in &self.events {
            text.push_str(&serde_json::to_string(event).expect("an event encodes"));
            text.push('\n');
        }
        text
    }

    /// Reads `history.jsonl` at `path`.
    pub fn read(path: &Path) -> Result<History, HistoryError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| HistoryError::Io {
            path: name.clone(),
            source,
        })?;
        let mut lines = std::io::BufReader::new(file).lines().enumerate();
        let next = |lines: &mut dyn Iterator<Item = (usize, std::io::Result<String>)>| {
            lines.next().map(|(number, line)| {
                line.map(|line| (number + 1, line))
                    .map_err(|source| HistoryError::Io {
                        path: name.clone(),
                        source,
                    })
            })
        };
        let (_, first) = next(&mut lines).ok_or_else(|| HistoryError::Empty(name.clone()))??;
        let header: Header = serde_json::from_str(&first).map_err(|source| HistoryError::Line {
            path: name.clone(),
            line: 1,
            source,
        })?;
        let mut events = Vec::new();
        while let Some(line) = next(&mut lines) {
            let (number, line) = line?;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str(&line).map_err(|source| HistoryError::Line {
                path: name.clone(),
                line: number,
                source,
            })?;
            events.push(event);
        }
        Ok(History { header, events })
    }
}

/// Appends events to `history.jsonl` as they happen.
pub struct Recorder {
    file: std::io::BufWriter<std::fs::File>,
}

impl Recorder {
    /// Creates `path` and writes the header.
    pub fn create(path: &Path, header: &Header) -> std::io::Result<Recorder> {
        let mut recorder = Recorder {
            file: std::io::BufWriter::new(std::fs::File::create(path)?),
        };
        recorder.line(&serde_json::to_string(header).expect("a header encodes"))?;
        Ok(recorder)
    }

    pub fn record(&mut self, event: &Event) -> std::io::Result<()> {
        self.line(&serde_json::to_string(event).expect("an event encodes"))
    }

    fn line(&mut self, line: &str) -> std::io::Result<()> {
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")
    }

    /// Writes out what is buffered (also done when dropped).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
