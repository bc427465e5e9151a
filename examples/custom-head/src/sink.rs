//! A sink of your own: every frame's results into a SQLite database, next to the
//! outputs the pipeline file asks for ([`vpipe_pipeline::run_with_sinks`]).
//!
//! A run is one transaction: its rows appear in the database only when the run
//! completes (or stops early, after the frames read so far), never half of them.
//! Tables (created when missing):
//!
//! - `runs(id, pipeline, started)`;
//! - `frames(run, frame, timestamp_ms, source, width, height)`;
//! - `detections(run, frame, head, class_id, label, score, x1, y1, x2, y2)`;
//! - `results(run, frame, head, task, json)`: every head's result as JSON
//!   (classification, masks' class areas, this crate's embeddings, ...).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use vpipe_core::result::HeadOutput;
use vpipe_pipeline::{FrameResults, PipelineError, Sink};

/// Writes a run's results into a SQLite database file.
pub struct SqliteSink {
    conn: Connection,
    path: PathBuf,
    run: i64,
}

impl SqliteSink {
    /// Opens (or creates) the database at `path` and starts a run of `pipeline`.
    pub fn open(path: &Path, pipeline: &str) -> vpipe_pipeline::Result<Self> {
        let fail = |e: rusqlite::Error| error(path, e);
        let conn = Connection::open(path).map_err(fail)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, pipeline TEXT NOT NULL, started TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS frames(run INTEGER NOT NULL, frame INTEGER NOT NULL, timestamp_ms REAL, source TEXT, width INTEGER NOT NULL, height INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS detections(run INTEGER NOT NULL, frame INTEGER NOT NULL, head TEXT NOT NULL, class_id INTEGER NOT NULL, label TEXT NOT NULL, score REAL NOT NULL, x1 REAL, y1 REAL, x2 REAL, y2 REAL);
             CREATE TABLE IF NOT EXISTS results(run INTEGER NOT NULL, frame INTEGER NOT NULL, head TEXT NOT NULL, task TEXT NOT NULL, json TEXT NOT NULL);
             BEGIN;",
        )
        .map_err(fail)?;
        conn.execute(
            "INSERT INTO runs(pipeline, started) VALUES (?1, datetime('now'))",
            params![pipeline],
        )
        .map_err(fail)?;
        let run = conn.last_insert_rowid();
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            run,
        })
    }
}

/// A database error as an output error naming the file.
fn error(path: &Path, e: rusqlite::Error) -> PipelineError {
    PipelineError::Output {
        output: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Sink for SqliteSink {
    fn name(&self) -> String {
        format!("database {}", self.path.display())
    }

    fn write(&mut self, frame: &FrameResults<'_>) -> vpipe_pipeline::Result<Vec<PathBuf>> {
        let fail = |e: rusqlite::Error| error(&self.path, e);
        self.conn
            .execute(
                "INSERT INTO frames VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    self.run,
                    frame.index as i64,
                    frame.timestamp_ms,
                    frame.source.map(|p| p.display().to_string()),
                    frame.width as i64,
                    frame.height as i64
                ],
            )
            .map_err(fail)?;
        for o in frame.outputs {
            if let HeadOutput::Detection { detections } = &o.output {
                for d in detections {
                    let [x1, y1, x2, y2] = d.bbox;
                    self.conn
                        .execute(
                            "INSERT INTO detections VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                            params![
                                self.run,
                                frame.index as i64,
                                o.head,
                                d.class_id as i64,
                                d.label,
                                d.score,
                                x1,
                                y1,
                                x2,
                                y2
                            ],
                        )
                        .map_err(fail)?;
                }
            }
            let json = serde_json::to_value(&o.output).map_err(|e| PipelineError::Output {
                output: self.path.clone(),
                message: e.to_string(),
            })?;
            let task = json["task"].as_str().unwrap_or_default().to_string();
            self.conn
                .execute(
                    "INSERT INTO results VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![self.run, frame.index as i64, o.head, task, json.to_string()],
                )
                .map_err(fail)?;
        }
        Ok(Vec::new())
    }

    fn finish(self: Box<Self>) -> vpipe_pipeline::Result<Vec<PathBuf>> {
        self.conn
            .execute_batch("COMMIT;")
            .map_err(|e| error(&self.path, e))?;
        // The database is the user's, kept outside the output folder's record.
        Ok(Vec::new())
    }
}
