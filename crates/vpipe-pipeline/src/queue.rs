//! A bounded queue between two stages, with a drop-oldest mode for live sources.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// A multi-producer, multi-consumer FIFO holding at most `capacity` items.
///
/// Closing it wakes everyone: pushes are then refused and pops drain what is left.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> BoundedQueue<T> {
    /// A queue of `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A stage that panicked cannot leave the queue's data half-changed: each
        // critical section is a single VecDeque call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for room, then appends. Returns `false` (dropping `item`) once closed.
    pub fn push(&self, item: T) -> bool {
        let mut s = self.lock();
        while s.items.len() >= self.capacity && !s.closed {
            s = self.not_full.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.closed {
            return false;
        }
        s.items.push_back(item);
        self.not_empty.notify_one();
        true
    }

    /// Appends without waiting; when full, the oldest item is dropped and returned.
    pub fn push_drop_oldest(&self, item: T) -> Option<T> {
        let mut s = self.lock();
        if s.closed {
            return Some(item);
        }
        let dropped = if s.items.len() >= self.capacity {
            s.items.pop_front()
        } else {
            None
        };
        s.items.push_back(item);
        self.not_empty.notify_one();
        dropped
    }

    /// Waits for an item; `None` once the queue is closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut s = self.lock();
        loop {
            if let Some(item) = s.items.pop_front() {
                self.not_full.notify_one();
                return Some(item);
            }
            if s.closed {
                return None;
            }
            s = self.not_empty.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Takes an item if one is waiting.
    pub fn try_pop(&self) -> Option<T> {
        let mut s = self.lock();
        let item = s.items.pop_front();
        if item.is_some() {
            self.not_full.notify_one();
        }
        item
    }

    /// Items waiting now (for logs).
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses further pushes and wakes all waiters.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_bounded_and_closing() {
        let q = Arc::new(BoundedQueue::new(2));
        assert!(q.push(1));
        assert!(q.push(2));
        assert_eq!(q.push_drop_oldest(3), Some(1));
        assert_eq!(q.pop(), Some(2));
        let q2 = Arc::clone(&q);
        let producer = std::thread::spawn(move || {
            for i in 10..20 {
                if !q2.push(i) {
                    return;
                }
            }
            q2.close();
        });
        let mut got = vec![q.pop().unwrap()];
        while let Some(v) = q.pop() {
            got.push(v);
        }
        producer.join().unwrap();
        assert_eq!(got, [3, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
        assert!(!q.push(1), "closed queues refuse items");
        assert_eq!(q.try_pop(), None);
    }
}
