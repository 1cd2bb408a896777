//! Capturing the JSON log lines an app under test writes, through the same
//! subscriber (and trace-id formatter) the binary installs.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::Dispatch;
use zocalo_telemetry::LogFormat;

/// Log lines written so far; cheap to clone, all clones share the lines.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// A subscriber that writes JSON lines at `directive` (`info`,
    /// `warn,zocalo_http=debug`) into a new capture. Install it with
    /// `tracing::dispatcher::set_default` in a current-thread test, so that
    /// every task of the test runs under it.
    pub fn dispatch(directive: &str) -> (Self, Dispatch) {
        let logs = Self::default();
        let dispatch = zocalo_telemetry::log_dispatch(LogFormat::Json, directive, logs.clone());
        (logs, dispatch)
    }

    /// Every line so far, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().expect("log capture lock").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| serde_json::from_str(line).expect("each log line is JSON"))
            .collect()
    }

    /// The lines whose `message` is `message`.
    pub fn with_message(&self, message: &str) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|line| line["message"] == message)
            .collect()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("log capture lock")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
