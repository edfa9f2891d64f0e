//! A service's serve loop on a thread of its own, with a current-thread
//! tokio runtime. For a service whose work is one packet at a time (DHCP):
//! on the shared multi-thread runtime every datagram woke a worker from
//! epoll and, without the LIFO slot, a second one to steal the task, about
//! 1.3 context switches per datagram; on its own thread a datagram costs
//! one wakeup. Channels to the shared runtime (the replication primary)
//! work across runtimes.
//!
//! Dropping the [`OwnThread`] (the service stopped: its task aborted)
//! resolves the loop's shutdown future and joins the thread, so its
//! sockets are closed before the service can be started again.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// Resolves when the [`OwnThread`] running the loop is dropped.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The running loop; as a future, its result.
pub struct OwnThread {
    stop: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<io::Result<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Start `make(shutdown)` on a new thread named `name`.
pub fn spawn<F>(name: &str, make: impl FnOnce(Shutdown) -> F) -> io::Result<OwnThread>
where
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let (finished, done) = oneshot::channel();
    let shutdown: Shutdown = Box::pin(async move {
        // Sent or dropped: either way, stop.
        let _ = stopped.await;
    });
    let serve = make(shutdown);
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| runtime.block_on(serve));
            // The receiver is gone when the service was stopped.
            let _ = finished.send(result);
        })?;
    Ok(OwnThread {
        stop: Some(stop),
        done,
        thread: Some(thread),
    })
}

impl Future for OwnThread {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.done).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(io::Error::other(
                "service thread ended without a result (panicked)",
            ))),
        }
    }
}

impl Drop for OwnThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The loop checks its shutdown first in every turn: this waits
            // for one turn and the runtime's teardown.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_loop_runs_on_its_own_thread_and_returns_its_result() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let caller = std::thread::current().id();
        let thread = spawn("ownthread-test", move |_shutdown| async move {
            assert_ne!(std::thread::current().id(), caller);
            Err(io::Error::other("served and failed"))
        })
        .expect("spawn");
        let error = runtime.block_on(thread).expect_err("the loop's error");
        assert_eq!(error.to_string(), "served and failed");
    }

    #[test]
    fn dropping_it_shuts_the_loop_down_and_waits_for_the_thread() {
        let ended = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ended);
        let thread = spawn("ownthread-test", move |shutdown| async move {
            shutdown.await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        })
        .expect("spawn");
        drop(thread);
        assert!(ended.load(Ordering::SeqCst), "joined after the loop ended");
    }
}
