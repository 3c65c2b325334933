//! Following a chat that another replica runs: one connection per (replica, chat) to the
//! runner's relay stream, whose events (with their numbers) are republished into this
//! replica's channel for the chat, where every subscriber here reads them.
//!
//! The connection is made by the follower's own task, so no request ever waits on a dial for
//! longer than the first snapshot's bound. It is made again when dropped (from the last number
//! seen: nothing twice, nothing missed), and abandoned when the chat moves (the runner
//! finished, died or was replaced): the follower then follows whoever runs it next.

use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use tokio::sync::{Notify, watch};

use super::{RELAY_SIGNATURE_HEADER, Relay};
use crate::chat::events::{ChatChannel, Published};

/// Longest a new subscriber waits for the runner's snapshot before it is served what this
/// replica has.
const FIRST_SNAPSHOT: Duration = Duration::from_secs(2);
/// Between attempts to reach a runner that did not answer.
const RECONNECT: Duration = Duration::from_millis(250);
/// How often a follower looks whether anyone here still reads the chat, and (not relaying)
/// whether another replica started running it.
const CHECK: Duration = Duration::from_secs(2);
/// Checks without subscribers before a follower stops.
const IDLE_CHECKS: u32 = 3;
/// A new follower keeps on this long even before its first subscriber has subscribed (the
/// stream that made it subscribes once it is primed).
const GRACE: Duration = Duration::from_secs(10);
/// Longest a runner may take to answer the relay's request.
const ANSWER: Duration = Duration::from_secs(5);
/// Longest a relay stream may stay silent: the runner pings every 15 s.
const SILENCE: Duration = Duration::from_secs(40);

/// A chat followed by this replica.
pub(super) struct Follower {
    chat_id: String,
    /// Told when a notice about the chat arrives: the runner may have changed.
    changed: Notify,
    /// True once subscribers here can be served a complete snapshot.
    primed: watch::Sender<bool>,
    /// Whether its events come through a relay now (notices then bring only state).
    relaying: std::sync::atomic::AtomicBool,
}

impl Follower {
    pub(super) fn poke(&self) {
        self.changed.notify_one();
    }

    fn mark_primed(&self) {
        self.primed.send_replace(true);
    }

    pub(super) fn relaying(&self) -> bool {
        self.relaying.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_relaying(&self, relaying: bool) {
        self.relaying.store(relaying, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Relay {
    /// Makes sure this replica follows the chat (relaying its live parts from the replica that
    /// runs it, if another does) and waits, within a bound, until its channel holds the
    /// runner's in-flight step. Called by a stream before it takes its snapshot.
    pub async fn follow(self: &Arc<Self>, chat_id: &str) {
        let follower = {
            let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            followers
                .entry(chat_id.to_string())
                .or_insert_with(|| {
                    let (primed, _) = watch::channel(false);
                    let follower = Arc::new(Follower {
                        chat_id: chat_id.to_string(),
                        changed: Notify::new(),
                        primed,
                        relaying: Default::default(),
                    });
                    tokio::spawn(self.clone().run_follower(follower.clone()));
                    follower
                })
                .clone()
        };
        let mut primed = follower.primed.subscribe();
        let _ = tokio::time::timeout(FIRST_SNAPSHOT, primed.wait_for(|primed| *primed)).await;
    }

    async fn run_follower(self: Arc<Self>, follower: Arc<Follower>) {
        let chat_id = follower.chat_id.clone();
        let channel = self.services.chats.hub.channel(&chat_id);
        // What is stored was published before this follower; it republishes what comes after.
        match self.store().last_message_seq(&chat_id).await {
            Ok(seq) => channel.lock().await.raise_high_water(seq),
            Err(e) => tracing::warn!(chat_id, error = %e, "cannot read where the chat's history ends"),
        }
        let started = tokio::time::Instant::now();
        let mut idle = 0;
        loop {
            match self.runner_elsewhere(&chat_id).await {
                Ok(Some((runner, address))) => {
                    follower.set_relaying(true);
                    let relayed = self.relay_from(&follower, &channel, &runner, &address).await;
                    follower.set_relaying(false);
                    if let Err(e) = relayed {
                        tracing::warn!(chat_id, runner, error = %e, "the relay from the replica running the chat dropped; reconnecting");
                        follower.mark_primed();
                        tokio::select! {
                            _ = follower.changed.notified() => {}
                            _ = tokio::time::sleep(RECONNECT) => {}
                        }
                    }
                }
                Ok(None) => {
                    // Run here or nowhere: notices bring what changes.
                    follower.mark_primed();
                    tokio::select! {
                        _ = follower.changed.notified() => {}
                        _ = tokio::time::sleep(CHECK) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(chat_id, error = %e, "cannot look up who runs the chat");
                    follower.mark_primed();
                    tokio::time::sleep(RECONNECT).await;
                }
            }
            idle = if channel.subscribers() == 0 && started.elapsed() > GRACE { idle + 1 } else { 0 };
            if idle >= IDLE_CHECKS {
                {
                    let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
                    // A stream that subscribed meanwhile found this follower in the map: keep on.
                    if channel.subscribers() > 0 {
                        idle = 0;
                        continue;
                    }
                    followers.remove(&chat_id);
                }
                // Relayed parts of a step nobody here reads any more are not kept (a run here
                // keeps its own).
                if !self.services.chats.runs.contains(&chat_id) {
                    channel.lock().await.clear_in_flight();
                }
                return;
            }
        }
    }

    /// Republishes the runner's stream until it ends, the chat stops running there, or nobody
    /// here reads it any more. `Err` when the runner could not be reached or the stream broke.
    async fn relay_from(
        &self,
        follower: &Follower,
        channel: &ChatChannel,
        runner: &str,
        address: &str,
    ) -> anyhow::Result<()> {
        let chat_id = &follower.chat_id;
        let after = channel.lock().await.high_water();
        let path = format!("/internal/v1/chats/{chat_id}/stream");
        let request = self
            .http
            .get(format!("{address}{path}"))
            .query(&[("after", after)])
            .header(RELAY_SIGNATURE_HEADER, self.sign(&path))
            .send();
        let response = tokio::time::timeout(ANSWER, request)
            .await
            .map_err(|_| anyhow::anyhow!("the replica running the chat did not answer within {ANSWER:?}"))??;
        if !response.status().is_success() {
            anyhow::bail!("the replica running the chat answered {}", response.status());
        }
        tracing::debug!(chat_id, runner, after, "relaying the chat's live events");
        let mut events = response.bytes_stream().eventsource();
        let mut check = tokio::time::interval_at(tokio::time::Instant::now() + CHECK, CHECK);
        loop {
            tokio::select! {
                next = tokio::time::timeout(SILENCE, events.next()) => {
                    let event = match next {
                        // Nothing for a while (a long tool call): connect again, in case the
                        // connection died without a word.
                        Err(_) => return Ok(()),
                        Ok(Some(Ok(event))) => event,
                        Ok(Some(Err(e))) => anyhow::bail!("the relay stream broke: {e}"),
                        Ok(None) => anyhow::bail!("the relay stream ended"),
                    };
                    match event.event.as_str() {
                        "relay_ready" => follower.mark_primed(),
                        // The runner is going away: whoever runs the chat next is followed.
                        "shutdown" => return Ok(()),
                        kind => {
                            let advances = !event.id.is_empty();
                            // An `error` without a number is the stream's own (this relay fell
                            // behind): reconnect from where it was.
                            if kind == "error" && !advances {
                                anyhow::bail!("{}", event.data);
                            }
                            let value: serde_json::Value = serde_json::from_str(&event.data)?;
                            let seq = value["seq"].as_i64().unwrap_or_default();
                            let finished = kind == "status" && advances && value["status"] != "running";
                            let published = Published { seq, kind: kind.to_string(), json: event.data, advances };
                            channel.lock().await.publish_relayed(Arc::new(published));
                            if finished {
                                // The turn there is over; notices bring what follows.
                                return Ok(());
                            }
                        }
                    }
                }
                _ = follower.changed.notified() => {
                    let now = self.runner_elsewhere(chat_id).await?;
                    if now.as_ref().map(|(id, _)| id.as_str()) != Some(runner) {
                        tracing::debug!(chat_id, runner, "the chat moved; leaving its old runner's stream");
                        return Ok(());
                    }
                }
                _ = check.tick() => {
                    if channel.subscribers() == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }
}
