//! Thread-per-core: one single-threaded tokio runtime per worker thread. Each worker
//! accepts on its own `SO_REUSEPORT` socket of every listener, serves the connections it
//! accepted from start to end, and keeps its own idle connections to members: nothing on
//! the request path wakes another thread. Member live state (in-flight counts, health,
//! breakers, sticky tables) is shared through atomics and short locks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(NOT_A_WORKER) };
    static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
}

const NOT_A_WORKER: usize = usize::MAX;

/// The worker this thread is, if it is one: the index of its idle-connection slots.
#[inline]
pub(crate) fn current() -> Option<usize> {
    let id = WORKER.with(Cell::get);
    (id != NOT_A_WORKER).then_some(id)
}

/// Waits until the tasks the worker had ready when this was first polled have run, so
/// that the writes of one batch of events leave together: the reads of a batch come
/// first, then the writes, and a peer woken by the first write finds the rest waiting
/// (one wake-up per batch instead of one per write). The delay is bounded: deferred
/// tasks go back to the end of the run queue as soon as the tasks ahead of them ran.
/// Off a worker (tests driving a connection on their own runtime) it is ready at once.
pub(crate) fn end_of_batch() -> EndOfBatch {
    EndOfBatch {
        registered: current().is_none(),
    }
}

pub(crate) struct EndOfBatch {
    registered: bool,
}

impl Future for EndOfBatch {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered {
            return Poll::Ready(());
        }
        self.registered = true;
        BATCH.with(|b| {
            let mut b = b.borrow_mut();
            if b.deferred.is_empty()
                && let Some(flusher) = &b.flusher
            {
                flusher.wake_by_ref();
            }
            b.deferred.push(cx.waker().clone());
        });
        Poll::Pending
    }
}

/// The worker's task that ends each batch: woken by the first deferral, it runs after
/// every task queued before it and wakes the deferred ones.
async fn end_batches() {
    std::future::poll_fn(|cx| {
        // Taken out, and woken outside the borrow: a woken task may defer again.
        let mut waking = BATCH.with(|b| {
            let mut b = b.borrow_mut();
            let b = &mut *b;
            if !b.flusher.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                b.flusher = Some(cx.waker().clone());
            }
            std::mem::replace(&mut b.deferred, std::mem::take(&mut b.spare))
        });
        for w in waking.drain(..) {
            w.wake();
        }
        BATCH.with(|b| b.borrow_mut().spare = waking);
        Poll::<()>::Pending
    })
    .await
}

#[derive(Default)]
struct Batch {
    flusher: Option<Waker>,
    deferred: Vec<Waker>,
    /// The emptied list of the last batch, kept so that neither allocates in steady state.
    spare: Vec<Waker>,
}

/// The worker threads; dropping this stops them (and drops what their runtimes hold).
pub(crate) struct Workers {
    handles: Vec<Handle>,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// Where to spawn: the traffic workers' runtimes.
#[derive(Clone)]
pub(crate) struct Handles(Vec<Handle>);

impl Handles {
    pub fn traffic(&self) -> &[Handle] {
        &self.0
    }
}

impl Workers {
    /// Starts `count` workers (at least one), plus the data plane's own control thread
    /// (index `count`): configuration following, listener reconciling and health checks
    /// run there, never on a worker.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = count.max(1);
        let mut handles = Vec::with_capacity(count + 1);
        let mut threads = Vec::with_capacity(count + 1);
        for id in 0..=count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let name = if id == count {
                "fulcrum-dp".to_owned()
            } else {
                format!("fulcrum-w{id}")
            };
            let thread = std::thread::Builder::new().name(name).spawn(move || {
                if id != count {
                    WORKER.with(|w| w.set(id));
                }
                runtime.block_on(async {
                    if id != count {
                        tokio::spawn(end_batches());
                    }
                    let _ = stopped.await;
                });
                // Connections still open are dropped with the runtime.
                runtime.shutdown_background();
            })?;
            threads.push((stop, thread));
        }
        Ok(Workers { handles, threads })
    }

    /// How many workers serve traffic.
    pub fn count(&self) -> usize {
        self.handles.len() - 1
    }

    /// The runtimes that serve traffic.
    pub fn handles(&self) -> Handles {
        Handles(self.handles[..self.count()].to_vec())
    }

    /// The runtime of the data plane's own tasks.
    pub fn control(&self) -> &Handle {
        &self.handles[self.count()]
    }

    pub fn stop(&mut self) {
        for (stop, thread) in self.threads.drain(..) {
            let _ = stop.send(());
            // Joining from a runtime thread would block it; the threads end on their own.
            if current().is_none() && tokio::runtime::Handle::try_current().is_err() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many workers to run when not told: one per CPU.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
