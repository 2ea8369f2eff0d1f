//! An ordered, bounded parallel pipeline: the calling thread produces jobs and consumes results
//! in submission order while rayon workers do the CPU work (compressing or decompressing blocks).
//!
//! At most `window` jobs are in flight, so memory stays bounded (window × block size) no matter
//! how large the input file is. Output order equals submission order, so results are
//! deterministic whatever the number of threads.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};

use crate::error::Result;

pub(crate) fn default_window() -> usize {
    (rayon::current_num_threads() * 4).max(8)
}

pub(crate) struct Ordered<'a, 'scope, J, O, W, C> {
    scope: &'a rayon::Scope<'scope>,
    work: &'scope W,
    consume: C,
    window: usize,
    tx: Sender<(u64, Result<O>)>,
    rx: Receiver<(u64, Result<O>)>,
    submitted: u64,
    consumed: u64,
    ready: BTreeMap<u64, Result<O>>,
    _job: std::marker::PhantomData<fn(J)>,
}

impl<'a, 'scope, J, O, W, C> Ordered<'a, 'scope, J, O, W, C>
where
    J: Send + 'scope,
    O: Send + 'scope,
    W: Fn(J) -> Result<O> + Sync,
    C: FnMut(O) -> Result<()>,
{
    pub fn new(
        scope: &'a rayon::Scope<'scope>,
        window: usize,
        work: &'scope W,
        consume: C,
    ) -> Self {
        let (tx, rx) = channel();
        Ordered {
            scope,
            work,
            consume,
            window: window.max(1),
            tx,
            rx,
            submitted: 0,
            consumed: 0,
            ready: BTreeMap::new(),
            _job: std::marker::PhantomData,
        }
    }

    /// Queues a job, first waiting (and consuming results) while the window is full.
    pub fn submit(&mut self, job: J) -> Result<()> {
        while self.submitted - self.consumed >= self.window as u64 {
            self.wait_one()?;
        }
        let seq = self.submitted;
        self.submitted += 1;
        let tx = self.tx.clone();
        let work = self.work;
        self.scope.spawn(move |_| {
            // The receiver only disappears after an error was returned; the result is moot then.
            let _ = tx.send((seq, work(job)));
        });
        Ok(())
    }

    /// Waits for every queued job and consumes its result.
    pub fn finish(mut self) -> Result<()> {
        while self.consumed < self.submitted {
            self.wait_one()?;
        }
        Ok(())
    }

    fn wait_one(&mut self) -> Result<()> {
        let (seq, result) = self.recv();
        self.ready.insert(seq, result);
        while let Some(result) = self.ready.remove(&self.consumed) {
            self.consumed += 1;
            (self.consume)(result?)?;
        }
        Ok(())
    }

    fn recv(&self) -> (u64, Result<O>) {
        loop {
            match self.rx.try_recv() {
                Ok(v) => return v,
                // We hold a sender ourselves, so the channel never disconnects.
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
            // On a rayon worker (caller inside a pool) blocking would starve a small pool: run
            // queued work instead. Outside any pool, simply block.
            match rayon::yield_now() {
                None => {
                    if let Ok(v) = self.rx.recv() {
                        return v;
                    }
                }
                Some(rayon::Yield::Executed) => {}
                Some(rayon::Yield::Idle) => {
                    if let Ok(v) = self.rx.recv_timeout(std::time::Duration::from_millis(1)) {
                        return v;
                    }
                }
            }
        }
    }
}
