//! The gateway's own tasks and the signal that ends them (linkerd2-proxy's
//! drain, with tokio-util's `TaskTracker` and `CancellationToken`): every
//! background loop, and every short task a component starts (a slot
//! release, a connection driver, a key refetch), is spawned here, so that
//! shutdown can stop the loops and wait for all of them instead of leaving
//! them detached. Session tasks are not: the registry counts those, and a
//! drain closes them (server/mod.rs).

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A cheap, cloneable handle: components keep one.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs a loop until shutdown (or until it returns by itself).
    pub fn spawn_loop<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker
            .spawn(self.stop.clone().run_until_cancelled_owned(task));
    }

    /// Runs a task that ends by itself (bounded by its own timeouts).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// As [`spawn`](Self::spawn), from outside the runtime's context (a
    /// `Drop`): nothing runs when there is no runtime.
    pub fn spawn_if_runtime<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.tracker.spawn_on(task, &rt);
        }
    }

    /// Resolves once shutdown has begun.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    /// Stops every loop and waits, at most `within`, for all tasks to end.
    /// Returns how many were still running.
    pub async fn shutdown(&self, within: Duration) -> usize {
        self.stop.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(within, self.tracker.wait()).await;
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_ends_loops_and_waits_for_tasks() {
        let tasks = Tasks::new();
        tasks.spawn_loop(std::future::pending());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(());
        });
        assert_eq!(tasks.shutdown(Duration::from_secs(5)).await, 0);
        assert!(rx.await.is_ok(), "the short task ran to its end");
    }
}
