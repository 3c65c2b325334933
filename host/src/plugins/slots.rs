//! The engine's instance slots, shared by every call.
//!
//! A call runs in a *running* slot; `max_concurrent_calls` of them bound the instances at work.
//! A call that waits on other chats (a parent waiting for its subagents) moves to a *waiting*
//! slot for as long as it waits, when one is free, and takes a running slot again to go on. So
//! parents waiting on their children can never hold every slot their children need to work,
//! which with a single pool would stall both until the waits time out.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub struct CallSlots {
    running: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    max_waiting: usize,
}

impl CallSlots {
    pub fn new(max_running: usize, max_waiting: usize) -> CallSlots {
        CallSlots {
            running: Arc::new(Semaphore::new(max_running)),
            waiting: Arc::new(Semaphore::new(max_waiting)),
            max_waiting,
        }
    }

    /// A running slot, once one is free.
    pub async fn acquire(&self) -> CallSlot {
        let permit = self.running.clone().acquire_owned().await.ok();
        CallSlot(Arc::new(Mutex::new(Held { slots: self.clone(), permit })))
    }

    /// Calls waiting on other chats in a waiting slot right now.
    pub fn waiting(&self) -> usize {
        self.max_waiting - self.waiting.available_permits()
    }
}

/// The slot one call holds; released when the call's state drops.
#[derive(Clone)]
pub struct CallSlot(Arc<Mutex<Held>>);

struct Held {
    slots: CallSlots,
    /// `None` only if the semaphore was closed, which never happens.
    permit: Option<OwnedSemaphorePermit>,
}

impl CallSlot {
    /// Runs `wait` (a wait on other chats) in a waiting slot if one is free, giving the running
    /// slot back meanwhile; when every waiting slot is taken, the call keeps its running slot.
    pub async fn while_waiting<F: Future>(&self, wait: F) -> F::Output {
        let slots = self.0.lock().unwrap_or_else(|e| e.into_inner()).slots.clone();
        let moved = match slots.waiting.clone().try_acquire_owned() {
            Ok(waiting) => {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).permit = Some(waiting);
                true
            }
            Err(_) => false,
        };
        let output = wait.await;
        if moved {
            let running = slots.running.clone().acquire_owned().await.ok();
            self.0.lock().unwrap_or_else(|e| e.into_inner()).permit = running;
        }
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_call_gives_its_running_slot_to_others_and_takes_one_back_to_go_on() {
        let slots = CallSlots::new(1, 1);
        let parent = slots.acquire().await;
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let child_slots = slots.clone();
        let child = tokio::spawn(async move {
            // The only running slot is free while the parent waits.
            let slot = child_slots.acquire().await;
            drop(slot);
            release.send(()).unwrap();
        });
        parent.while_waiting(async { released.await.unwrap() }).await;
        child.await.unwrap();
        assert_eq!(slots.waiting(), 0, "back in a running slot");
        assert_eq!(slots.running.available_permits(), 0, "the parent holds the running slot again");
        drop(parent);
        assert_eq!(slots.running.available_permits(), 1);
    }

    #[tokio::test]
    async fn with_every_waiting_slot_taken_a_wait_keeps_its_running_slot() {
        let slots = CallSlots::new(2, 0);
        let parent = slots.acquire().await;
        parent
            .while_waiting(async { assert_eq!(slots.running.available_permits(), 1, "the running slot is kept") })
            .await;
    }
}
