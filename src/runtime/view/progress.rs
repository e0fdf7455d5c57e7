//! How far a view version has got, shared between its runner and its queries: what
//! read-your-writes waits on.

use std::time::Duration;

use tokio::sync::watch;

use super::error::ViewError;
use super::id::ViewId;
use crate::storage::Position;

/// Whether a runner is applying events to the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    /// No runner started yet in this process.
    Idle,
    Running,
    Stopped,
    Failed(String),
}

/// A view version's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    /// Every event before this position is applied (or was not for this view).
    pub(crate) next: Position,
    /// Whether this version is the one queries read.
    pub(crate) active: bool,
    pub(crate) run: Run,
}

/// The progress of one view version: see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Progress {
    tx: watch::Sender<State>,
}

impl Progress {
    pub(crate) fn new(next: Position, active: bool) -> Self {
        let (tx, _) = watch::channel(State {
            next,
            active,
            run: Run::Idle,
        });
        Progress { tx }
    }

    pub(crate) fn advance(&self, next: Position, active: bool) {
        self.tx.send_modify(|s| {
            s.next = next;
            s.active = active;
            s.run = Run::Running;
        });
    }

    pub(crate) fn end(&self, outcome: &Result<(), ViewError>) {
        self.tx.send_modify(|s| {
            s.run = match outcome {
                Ok(()) => Run::Stopped,
                Err(e) => Run::Failed(e.to_string()),
            }
        });
    }

    /// Waits until `position` is applied by the active version, the runner ends, or `timeout`
    /// passes.
    pub(crate) async fn wait_for(
        &self,
        id: &ViewId,
        position: Position,
        timeout: Duration,
    ) -> Result<(), ViewError> {
        let applied = |s: &State| s.active && s.next > position;
        let mut rx = self.tx.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|s| applied(s) || matches!(s.run, Run::Stopped | Run::Failed(_)))
                .await
                .map(|state| state.clone())
        })
        .await;
        // The sender lives as long as `self`, so the wait itself cannot fail.
        let state = match waited {
            Ok(Ok(state)) => state,
            Ok(Err(_)) | Err(_) => {
                let state = rx.borrow().clone();
                if applied(&state) {
                    return Ok(());
                }
                return Err(ViewError::Timeout {
                    view: id.name.clone(),
                    version: id.version,
                    position,
                    applied: if state.active {
                        state.next.saturating_sub(1)
                    } else {
                        0
                    },
                    timeout,
                });
            }
        };
        if applied(&state) {
            return Ok(());
        }
        let reason = match state.run {
            Run::Failed(reason) => reason,
            _ => "the runner was stopped".to_owned(),
        };
        Err(ViewError::NotRunning {
            view: id.name.clone(),
            version: id.version,
            reason,
        })
    }
}
