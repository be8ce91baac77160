//! Thread-per-core: one single-threaded tokio runtime per worker thread. Each worker
//! accepts on its own `SO_REUSEPORT` socket of every listener, serves the connections it
//! accepted from start to end, and keeps its own idle connections to members: nothing on
//! the request path wakes another thread. Member live state (in-flight counts, health,
//! breakers, sticky tables) is shared through atomics and short locks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::RawFd;
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
            b.wake_flusher_if_first();
            b.deferred.push(cx.waker().clone());
        });
        Poll::Pending
    }
}

/// Whether this thread is a worker that sends in batches (it has an io_uring ring).
pub(crate) fn sends_batched() -> bool {
    current().is_some() && BATCH.with(|b| b.borrow().ring.is_some())
}

/// Sends `data` on the socket `fd` when the batch ends, together with every other answer
/// of the batch in one system call (io_uring), and resolves to what that send did: the
/// bytes sent (0 if the socket could take nothing now) or its error. Writes submitted
/// separately let each woken client preempt the worker at once and take one answer per
/// wake-up; submitted together, the worker is preempted at most once, after all of them.
/// `None` at once when this thread has no ring (see [`sends_batched`]): the caller writes
/// `data` itself.
///
/// `data` stays borrowed until the future resolves or is dropped, and the kernel reads it
/// only during the batch's submission, which waits for every completion (the sends are
/// non-blocking), so no buffer outlives its send.
pub(crate) fn send_at_end_of_batch(fd: RawFd, data: &[u8]) -> BatchedSend<'_> {
    BatchedSend {
        fd,
        data,
        state: SendState::New,
    }
}

pub(crate) struct BatchedSend<'a> {
    fd: RawFd,
    data: &'a [u8],
    state: SendState,
}

#[derive(Clone, Copy)]
enum SendState {
    New,
    /// Queued as entry `index` of batch `batch`.
    Queued {
        batch: u64,
        index: usize,
    },
    Done,
}

impl Future for BatchedSend<'_> {
    type Output = Option<std::io::Result<usize>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match this.state {
            SendState::Done => Poll::Ready(None),
            SendState::New => {
                if !sends_batched() {
                    this.state = SendState::Done;
                    return Poll::Ready(None);
                }
                let (batch, index) = BATCH.with(|b| {
                    let mut b = b.borrow_mut();
                    b.wake_flusher_if_first();
                    let index = b.sends.len();
                    b.sends.push(Queued {
                        fd: this.fd,
                        data: this.data.as_ptr(),
                        len: u32::try_from(this.data.len()).unwrap_or(u32::MAX),
                        waker: cx.waker().clone(),
                    });
                    (b.batch, index)
                });
                this.state = SendState::Queued { batch, index };
                Poll::Pending
            }
            SendState::Queued { batch, index } => BATCH.with(|b| {
                let mut b = b.borrow_mut();
                if b.batch == batch {
                    // Not sent yet (polled early): keep the latest waker.
                    b.sends[index].waker.clone_from(cx.waker());
                    return Poll::Pending;
                }
                this.state = SendState::Done;
                let result = if b.results_of == batch {
                    b.results[index]
                } else {
                    -libc::EIO
                };
                Poll::Ready(Some(if result >= 0 {
                    Ok(result as usize)
                } else if -result == libc::EAGAIN {
                    Ok(0)
                } else {
                    Err(std::io::Error::from_raw_os_error(-result))
                }))
            }),
        }
    }
}

impl Drop for BatchedSend<'_> {
    fn drop(&mut self) {
        // A send still queued must not reach the kernel once its buffer may be gone.
        if let SendState::Queued { batch, index } = self.state {
            let _ = BATCH.try_with(|b| {
                let mut b = b.borrow_mut();
                if b.batch == batch {
                    b.sends[index].fd = -1;
                }
            });
        }
    }
}

/// The worker's task that ends each batch: woken by the first deferral, it runs after
/// every task queued before it, submits the batch's sends and wakes the deferred tasks.
async fn end_batches() {
    BATCH.with(|b| b.borrow_mut().ring = ring());
    std::future::poll_fn(|cx| {
        // Taken out, and woken outside the borrow: a woken task may defer again.
        let (mut waking, mut sent) = BATCH.with(|b| {
            let mut b = b.borrow_mut();
            let b = &mut *b;
            if !b.flusher.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                b.flusher = Some(cx.waker().clone());
            }
            if !b.sends.is_empty() {
                b.submit();
            }
            (
                std::mem::replace(&mut b.deferred, std::mem::take(&mut b.spare)),
                std::mem::replace(&mut b.sends, std::mem::take(&mut b.spare_sends)),
            )
        });
        for w in waking.drain(..) {
            w.wake();
        }
        for s in sent.drain(..) {
            s.waker.wake();
        }
        BATCH.with(|b| {
            let mut b = b.borrow_mut();
            b.spare = waking;
            b.spare_sends = sent;
        });
        Poll::<()>::Pending
    })
    .await
}

/// The worker's ring for batched sends, unless io_uring is unavailable (an old kernel, a
/// sandbox that forbids it) or turned off with `FULCRUM_IO_URING=0`.
fn ring() -> Option<io_uring::IoUring> {
    if std::env::var_os("FULCRUM_IO_URING").is_some_and(|v| v == "0") {
        return None;
    }
    let built = io_uring::IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| io_uring::IoUring::new(RING_ENTRIES));
    let ring = match built {
        Ok(ring) => ring,
        Err(e) => {
            tracing::debug!(error = %e, "io_uring unavailable: answers are sent one by one");
            return None;
        }
    };
    // A send flagged MSG_DONTWAIT must fail with EAGAIN rather than wait for room (the
    // submission waits for every completion). Kernels that know IORING_OP_SEND_ZC (6.0)
    // all do; older ones are not trusted with it.
    let mut probe = io_uring::Probe::new();
    let recent = ring.submitter().register_probe(&mut probe).is_ok()
        && probe.is_supported(io_uring::opcode::Send::CODE)
        && probe.is_supported(io_uring::opcode::SendZc::CODE);
    if !recent {
        tracing::debug!("io_uring older than Linux 6.0: answers are sent one by one");
        return None;
    }
    Some(ring)
}

const RING_ENTRIES: u32 = 256;

/// A send waiting for the end of its batch.
struct Queued {
    /// -1 once its future was dropped.
    fd: RawFd,
    data: *const u8,
    len: u32,
    waker: Waker,
}

#[derive(Default)]
struct Batch {
    flusher: Option<Waker>,
    deferred: Vec<Waker>,
    /// The emptied list of the last batch, kept so that neither allocates in steady state.
    spare: Vec<Waker>,
    ring: Option<io_uring::IoUring>,
    /// Which batch is being gathered; a queued send's results are found under its number.
    batch: u64,
    sends: Vec<Queued>,
    spare_sends: Vec<Queued>,
    /// The results of batch `results_of`'s sends, by index: bytes sent, or `-errno`.
    results: Vec<i32>,
    results_of: u64,
}

impl Batch {
    /// The first deferral or send of a batch queues the task that ends it.
    fn wake_flusher_if_first(&self) {
        if self.deferred.is_empty()
            && self.sends.is_empty()
            && let Some(flusher) = &self.flusher
        {
            flusher.wake_by_ref();
        }
    }

    /// Submits every queued send in as few `io_uring_enter` calls as the ring allows and
    /// waits for their completions, which come at once: each is `MSG_DONTWAIT`.
    // The one unsafe call of the data plane: handing the kernel pointers to buffers.
    #[allow(unsafe_code)]
    fn submit(&mut self) {
        use io_uring::{opcode, types};
        self.results.clear();
        self.results.resize(self.sends.len(), -libc::EIO);
        self.results_of = self.batch;
        self.batch += 1;
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let mut next = 0;
        let mut broken = false;
        while next < self.sends.len() && !broken {
            let mut pushed = 0;
            {
                let mut sq = ring.submission();
                while next < self.sends.len() && !sq.is_full() {
                    let s = &self.sends[next];
                    if s.fd >= 0 {
                        let entry = opcode::Send::new(types::Fd(s.fd), s.data, s.len)
                            .flags(libc::MSG_DONTWAIT)
                            .build()
                            .user_data(next as u64);
                        // SAFETY: the buffer is borrowed by a live `BatchedSend`, awaited in
                        // place by its connection task (never leaked; a dropped one set fd
                        // to -1, on this same thread, before this runs). It cannot resolve
                        // before this function returns, and every entry completes before
                        // it does (MSG_DONTWAIT: nothing is left in flight).
                        if unsafe { sq.push(&entry) }.is_err() {
                            break;
                        }
                        pushed += 1;
                    }
                    next += 1;
                }
            }
            let mut completed = 0;
            while completed < pushed {
                match ring.submit_and_wait(pushed - completed) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Nothing was taken from the queue: drop the ring with them unsent,
                        // their futures fail, and the worker writes one by one from now on.
                        tracing::warn!(error = %e, "io_uring submission failed; answers are sent one by one");
                        broken = true;
                        break;
                    }
                }
                for cqe in ring.completion() {
                    if let Some(r) = self.results.get_mut(cqe.user_data() as usize) {
                        *r = cqe.result();
                    }
                    completed += 1;
                }
            }
        }
        if broken {
            self.ring = None;
        }
    }
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
