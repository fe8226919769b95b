//! Batching window (upstream `Batcher`): after the first trigger, wait until no *new* trigger
//! arrived for `idle`, or `max` passed since the first, whichever is first. One solve then
//! covers the whole burst (a Deployment scaled to 50 makes 50 triggers, not 50 solves).

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, sleep_until};

use crate::state::Trigger;

/// Default idle window (`BATCH_IDLE_DURATION`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(1);
/// Default maximum window (`BATCH_MAX_DURATION`).
pub const DEFAULT_MAX: Duration = Duration::from_secs(10);

/// Collects triggers into batches.
pub struct Batcher {
    rx: UnboundedReceiver<Trigger>,
    idle: Duration,
    max: Duration,
}

impl Batcher {
    /// A batcher over the trigger channel.
    pub fn new(rx: UnboundedReceiver<Trigger>, idle: Duration, max: Duration) -> Self {
        Self { rx, idle, max }
    }

    /// Waits for the next batch and returns how many distinct triggers it held; `None` once
    /// every sender is gone.
    pub async fn next_batch(&mut self) -> Option<usize> {
        let first = self.rx.recv().await?;
        let mut seen = HashSet::from([first]);
        let start = Instant::now();
        let max_deadline = start + self.max;
        let mut idle_deadline = start + self.idle;
        loop {
            tokio::select! {
                t = self.rx.recv() => match t {
                    // Senders gone: finish this batch; the next call returns None.
                    None => break,
                    Some(t) => {
                        // Only new triggers extend the window: a pod updated every 100 ms
                        // must not hold the batch open until `max`.
                        if seen.insert(t) {
                            idle_deadline = Instant::now() + self.idle;
                        }
                    }
                },
                _ = sleep_until(idle_deadline.min(max_deadline)) => break,
            }
        }
        Some(seen.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    fn pod(n: u32) -> Trigger {
        Trigger::Pod(format!("uid-{n}"))
    }

    #[tokio::test(start_paused = true)]
    async fn idle_window_closes_a_quiet_batch() {
        let (tx, rx) = unbounded_channel();
        let mut b = Batcher::new(rx, Duration::from_secs(1), Duration::from_secs(10));
        tx.send(pod(1)).unwrap_or_default();
        tx.send(pod(2)).unwrap_or_default();
        let t0 = Instant::now();
        assert_eq!(b.next_batch().await, Some(2));
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn new_triggers_extend_until_max() {
        let (tx, rx) = unbounded_channel();
        let mut b = Batcher::new(rx, Duration::from_secs(1), Duration::from_secs(3));
        let sender = tokio::spawn(async move {
            for n in 0..100 {
                if tx.send(pod(n)).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        });
        let t0 = Instant::now();
        let n = b.next_batch().await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(3), "cut at max");
        assert_eq!(n, Some(8), "triggers at 0, 0.4, ..., 2.8 s");
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_triggers_do_not_extend() {
        let (tx, rx) = unbounded_channel();
        let mut b = Batcher::new(rx, Duration::from_secs(1), Duration::from_secs(10));
        let sender = tokio::spawn(async move {
            for _ in 0..100 {
                if tx.send(pod(1)).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let t0 = Instant::now();
        assert_eq!(b.next_batch().await, Some(1));
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn closed_channel_ends() {
        let (tx, rx) = unbounded_channel::<Trigger>();
        let mut b = Batcher::new(rx, Duration::from_secs(1), Duration::from_secs(10));
        drop(tx);
        assert_eq!(b.next_batch().await, None);
    }
}
