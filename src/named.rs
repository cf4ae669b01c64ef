//! A per-process registry of shared values by name: a queue's or a lock's wake-up
//! signal, a stream's reader signal, a lock resource's fair line of waiters.
//!
//! The registry holds only weak references: a value lives while some waiter holds
//! it, and the first lookup after the last one let go makes a fresh one. So an
//! idle name costs nothing, and a name nobody waits on is forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// Values by name, alive while held elsewhere. See the module docs.
#[derive(Debug)]
pub struct Named<T> {
    entries: Mutex<HashMap<String, Weak<T>>>,
}

impl<T> Default for Named<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<T> Named<T> {
    /// The live value of `name`, or the one `make` returns, which is kept from now on.
    /// `make` runs under the registry's lock, so it runs once per fresh value
    /// (a caller may start the value's task there).
    pub fn get_or_insert_with(&self, name: &str, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        let mut entries = self.entries();
        if let Some(value) = entries.get(name).and_then(Weak::upgrade) {
            return value;
        }
        // Forget the names nobody holds any more before adding one.
        entries.retain(|_, weak| weak.strong_count() > 0);
        let value = make();
        entries.insert(name.to_owned(), Arc::downgrade(&value));
        value
    }

    /// The live value of `name`, if someone holds it.
    pub fn get(&self, name: &str) -> Option<Arc<T>> {
        self.entries().get(name).and_then(Weak::upgrade)
    }

    /// Every live value.
    pub fn all(&self) -> Vec<Arc<T>> {
        self.entries().values().filter_map(Weak::upgrade).collect()
    }

    /// The map, also after a panic elsewhere while it was locked: every change
    /// to it is a single insert or retain, so it is never left half-changed.
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Weak<T>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Default> Named<T> {
    /// The live value of `name`, or a new default one.
    pub fn get_or_default(&self, name: &str) -> Arc<T> {
        self.get_or_insert_with(name, Arc::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_value_is_shared_and_a_dropped_one_is_replaced() {
        let named: Named<Mutex<u32>> = Named::default();
        let first = named.get_or_default("mail");
        *first.lock().expect("lock") = 7;
        assert_eq!(*named.get_or_default("mail").lock().expect("lock"), 7);
        assert!(named.get("other").is_none());
        drop(first);
        assert!(named.get("mail").is_none());
        assert_eq!(*named.get_or_default("mail").lock().expect("lock"), 0);
    }

    #[test]
    fn all_lists_only_held_values() {
        let named: Named<u32> = Named::default();
        let kept = named.get_or_insert_with("a", || Arc::new(1));
        drop(named.get_or_insert_with("b", || Arc::new(2)));
        let all = named.all();
        assert_eq!(all.len(), 1);
        assert_eq!(*all[0], *kept);
    }
}
