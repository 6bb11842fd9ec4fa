//! Where the clients of one run that work together find each other: a chat room's members wait
//! until all of them have joined before anyone sends (so every message has a known number of
//! recipients), and the two clients of a direct-message or trading pair learn each other's
//! account id. Groups are named by a string key; members are known by their rank.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};

use proto::AccountId;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Groups of clients by key.
#[derive(Debug, Default)]
pub struct Rendezvous {
    groups: Mutex<HashMap<String, Arc<Group>>>,
}

#[derive(Debug, Default)]
struct Group {
    members: Mutex<HashMap<usize, AccountId>>,
    changed: Notify,
}

impl Group {
    fn with_members<T>(&self, read: impl FnOnce(&HashMap<usize, AccountId>) -> T) -> Option<T> {
        self.members.lock().ok().map(|members| read(&members))
    }
}

impl Rendezvous {
    /// Client `rank`, account `account_id`, has arrived in group `key`.
    pub fn arrive(&self, key: &str, rank: usize, account_id: AccountId) {
        let group = self.group(key);
        if let Ok(mut members) = group.members.lock() {
            members.insert(rank, account_id);
        }
        group.changed.notify_waiters();
    }

    /// Members that have arrived in group `key`.
    pub fn count(&self, key: &str) -> usize {
        self.group(key).with_members(HashMap::len).unwrap_or(0)
    }

    /// Waits until group `key` has `n` members; false if `until` came first.
    pub async fn wait_for_count(&self, key: &str, n: usize, until: Instant) -> bool {
        self.wait(key, until, |members| (members.len() >= n).then_some(())).await.is_some()
    }

    /// Waits until client `rank` has arrived in group `key` and returns its account; `None` if
    /// `until` came first.
    pub async fn wait_for_member(&self, key: &str, rank: usize, until: Instant) -> Option<AccountId> {
        self.wait(key, until, |members| members.get(&rank).copied()).await
    }

    async fn wait<T>(
        &self,
        key: &str,
        until: Instant,
        done: impl Fn(&HashMap<usize, AccountId>) -> Option<T>,
    ) -> Option<T> {
        let group = self.group(key);
        loop {
            // Registered before the check, so an arrival between the check and the wait still
            // wakes this waiter.
            let mut notified = pin!(group.changed.notified());
            notified.as_mut().enable();
            if let Some(found) = group.with_members(&done).flatten() {
                return Some(found);
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return group.with_members(&done).flatten();
            }
        }
    }

    fn group(&self, key: &str) -> Arc<Group> {
        match self.groups.lock() {
            Ok(mut groups) => groups.entry(key.to_owned()).or_default().clone(),
            // A poisoned map only happens after a panic elsewhere; a fresh group keeps going.
            Err(_) => Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;

    #[tokio::test]
    async fn waiters_see_members_that_arrive_before_or_after_them() {
        let rendezvous = Arc::new(Rendezvous::default());
        let until = Instant::now() + Duration::from_secs(5);
        rendezvous.arrive("pair-0", 0, AccountId(Uuid::from_u128(10)));
        let waiter = {
            let rendezvous = rendezvous.clone();
            tokio::spawn(async move { rendezvous.wait_for_member("pair-0", 1, until).await })
        };
        tokio::task::yield_now().await;
        rendezvous.arrive("pair-0", 1, AccountId(Uuid::from_u128(11)));
        assert_eq!(waiter.await.expect("join"), Some(AccountId(Uuid::from_u128(11))));
        assert!(rendezvous.wait_for_count("pair-0", 2, until).await);
        assert_eq!(rendezvous.count("pair-1"), 0);
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(!rendezvous.wait_for_count("pair-1", 1, soon).await, "nobody arrived");
    }
}
