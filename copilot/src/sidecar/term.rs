//! The SIGTERM stream, remembering whether one arrived: a SIGTERM consumed while
//! uploading still ends the idle wait after it.

/// SIGTERM, installed once, at the sidecar's start.
pub(super) struct Term {
    signal: tokio::signal::unix::Signal,
    seen: bool,
}

impl Term {
    pub(super) fn install() -> std::io::Result<Self> {
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        Ok(Self {
            signal,
            seen: false,
        })
    }

    /// Returns once a SIGTERM arrived (at once if one already did).
    pub(super) async fn wait(&mut self) {
        if !self.seen {
            self.signal.recv().await;
            self.seen = true;
        }
    }
}
