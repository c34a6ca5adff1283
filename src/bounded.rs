//! At most N futures in flight on the current task, results taken as each
//! finishes: how the chat stage spreads model calls over the concurrency
//! Ollama is configured to serve (`ollama.concurrency`), without spawning
//! (the futures borrow the cycle's clients and config).
//!
//! The futures are polled only while [`Bounded::next`] or [`Bounded::drive`]
//! is awaited. Whatever the caller awaits between two results (posting a
//! reply) goes through `drive`, so the calls in flight keep running: a
//! model answer that arrives meanwhile is not mistaken for a timeout.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// A bounded set of futures in flight.
pub(crate) struct Bounded<'a, T> {
    limit: usize,
    in_flight: Vec<Pin<Box<dyn Future<Output = T> + 'a>>>,
    /// Outputs that finished while [`Bounded::drive`] ran, oldest first.
    ready: VecDeque<T>,
}

impl<'a, T> Bounded<'a, T> {
    /// An empty set that holds at most `limit` (at least one).
    pub(crate) fn new(limit: usize) -> Self {
        Bounded {
            limit: limit.max(1),
            in_flight: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// Whether another future may start.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight.len() < self.limit
    }

    /// Whether nothing is in flight or waiting to be taken.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.in_flight.is_empty() && self.ready.is_empty()
    }

    /// Starts `fut` (the caller checks [`Bounded::has_room`]).
    pub(crate) fn push(&mut self, fut: impl Future<Output = T> + 'a) {
        self.in_flight.push(Box::pin(fut));
    }

    /// The output of the next future to finish (or one that finished
    /// during [`Bounded::drive`]); `None` when none is left.
    pub(crate) async fn next(&mut self) -> Option<T> {
        if let Some(out) = self.ready.pop_front() {
            return Some(out);
        }
        if self.in_flight.is_empty() {
            return None;
        }
        let out = std::future::poll_fn(|cx| {
            for i in 0..self.in_flight.len() {
                if let Poll::Ready(out) = self.in_flight[i].as_mut().poll(cx) {
                    drop(self.in_flight.swap_remove(i));
                    return Poll::Ready(out);
                }
            }
            Poll::Pending
        })
        .await;
        Some(out)
    }

    /// Awaits `fut` while the futures in flight keep running; those that
    /// finish meanwhile are kept for [`Bounded::next`].
    pub(crate) async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            let mut i = 0;
            while i < self.in_flight.len() {
                match self.in_flight[i].as_mut().poll(cx) {
                    Poll::Ready(out) => {
                        drop(self.in_flight.swap_remove(i));
                        self.ready.push_back(out);
                    }
                    Poll::Pending => i += 1,
                }
            }
            fut.as_mut().poll(cx)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn never_more_than_the_limit_in_flight_and_results_as_they_finish() {
        let running = std::cell::Cell::new(0usize);
        let peak = std::cell::Cell::new(0usize);
        let job = |ms: u64| {
            let (running, peak) = (&running, &peak);
            async move {
                running.set(running.get() + 1);
                peak.set(peak.get().max(running.get()));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                running.set(running.get() - 1);
                ms
            }
        };
        let mut set = Bounded::new(2);
        let mut queue = vec![30, 1, 20, 5].into_iter();
        let mut order = Vec::new();
        loop {
            while set.has_room() {
                match queue.next() {
                    Some(ms) => set.push(job(ms)),
                    None => break,
                }
            }
            match set.next().await {
                Some(ms) => order.push(ms),
                None => break,
            }
        }
        assert_eq!(peak.get(), 2);
        order.sort();
        assert_eq!(order, vec![1, 5, 20, 30], "every result, once");
        assert!(set.is_empty());
    }

    #[tokio::test]
    async fn what_finishes_while_driving_another_future_is_kept_in_order() {
        let mut set = Bounded::new(3);
        set.push(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            "fast"
        });
        set.push(async {
            tokio::time::sleep(Duration::from_millis(15)).await;
            "slow"
        });
        // While this runs (30 ms), both finish; neither is lost or late.
        let started = std::time::Instant::now();
        set.drive(tokio::time::sleep(Duration::from_millis(30)))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(set.has_room());
        assert_eq!(set.next().await, Some("fast"));
        assert_eq!(set.next().await, Some("slow"));
        assert_eq!(set.next().await, None);
        assert!(set.is_empty());
    }

    #[tokio::test]
    async fn a_zero_limit_still_runs_one() {
        let mut set: Bounded<'_, u8> = Bounded::new(0);
        assert!(set.has_room());
        set.push(async { 7 });
        assert!(!set.has_room());
        assert_eq!(set.next().await, Some(7));
        assert_eq!(set.next().await, None);
    }
}
