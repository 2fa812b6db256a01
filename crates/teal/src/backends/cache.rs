//! The versioned prediction cache: identical inputs answered from memory.
//!
//! Each slot has its own cache and every key starts with the slot's version, so a switch or a
//! rollback can never serve another version's answer. Bounded by entries (oldest out first)
//! and by age.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use teal_core::config::CacheConfig;
use teal_core::protocol::{InferRequest, Tensor};

/// Requests whose key would be larger than this are not cached.
const MAX_KEY_BYTES: usize = 64 * 1024;

pub struct PredictionCache {
    version: String,
    max_entries: usize,
    ttl: Duration,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Vec<u8>, (Instant, Arc<Vec<Tensor>>)>,
    order: VecDeque<Vec<u8>>,
}

/// Hit and miss counts of one version's cache.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheStats {
    pub version: String,
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
}

impl PredictionCache {
    pub fn new(version: &str, config: &CacheConfig) -> PredictionCache {
        PredictionCache {
            version: version.to_string(),
            max_entries: config.max_entries.max(1),
            ttl: Duration::from_millis(config.ttl_ms),
            entries: Mutex::new(Entries::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The canonical bytes of a request: version, inputs (name, datatype, shape, elements)
    /// and the outputs asked for. `None` when the request is too large to be worth keeping.
    pub fn key(&self, request: &InferRequest) -> Option<Vec<u8>> {
        let mut key = Vec::with_capacity(256);
        key.extend_from_slice(self.version.as_bytes());
        key.push(0);
        for input in &request.inputs {
            key.extend_from_slice(input.name.as_bytes());
            key.push(0);
            key.extend_from_slice(input.data.datatype().as_str().as_bytes());
            for dim in &input.shape {
                key.extend_from_slice(&(*dim as u64).to_le_bytes());
            }
            key.push(0);
            input.data.write_le_bytes(&mut key);
            if key.len() > MAX_KEY_BYTES {
                return None;
            }
        }
        for output in request.outputs.iter().flatten() {
            key.extend_from_slice(output.name.as_bytes());
            key.push(0);
        }
        Some(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &[u8]) -> Option<Arc<Vec<Tensor>>> {
        let found = {
            let entries = self.lock();
            entries
                .map
                .get(key)
                .filter(|(at, _)| at.elapsed() < self.ttl)
                .map(|(_, v)| v.clone())
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn put(&self, key: Vec<u8>, outputs: Arc<Vec<Tensor>>) {
        let mut entries = self.lock();
        if entries
            .map
            .insert(key.clone(), (Instant::now(), outputs))
            .is_none()
        {
            entries.order.push_back(key);
        }
        while entries.map.len() > self.max_entries {
            match entries.order.pop_front() {
                Some(oldest) => {
                    entries.map.remove(&oldest);
                }
                None => break,
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            version: self.version.clone(),
            entries: self.lock().map.len(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teal_core::protocol::TensorData;

    fn request(x: f32) -> InferRequest {
        InferRequest {
            id: None,
            inputs: vec![Tensor {
                name: "input".into(),
                shape: vec![1, 2],
                data: TensorData::Fp32(vec![x, 1.0]),
            }],
            outputs: None,
            binary_output: false,
        }
    }

    fn answer(label: i64) -> Arc<Vec<Tensor>> {
        Arc::new(vec![Tensor {
            name: "label".into(),
            shape: vec![1],
            data: TensorData::Int64(vec![label]),
        }])
    }

    #[test]
    fn keys_differ_by_version_and_input() {
        let config = CacheConfig {
            enabled: true,
            max_entries: 10,
            ttl_ms: 60_000,
        };
        let v1 = PredictionCache::new("v1", &config);
        let v2 = PredictionCache::new("v2", &config);
        assert_ne!(v1.key(&request(0.0)), v2.key(&request(0.0)));
        assert_ne!(v1.key(&request(0.0)), v1.key(&request(0.5)));
        assert_eq!(v1.key(&request(0.5)), v1.key(&request(0.5)));
    }

    #[test]
    fn hits_misses_and_eviction_of_the_oldest() {
        let cache = PredictionCache::new(
            "v1",
            &CacheConfig {
                enabled: true,
                max_entries: 2,
                ttl_ms: 60_000,
            },
        );
        let keys: Vec<Vec<u8>> = (0..3)
            .map(|i| cache.key(&request(i as f32)).unwrap())
            .collect();
        assert!(cache.get(&keys[0]).is_none());
        cache.put(keys[0].clone(), answer(0));
        cache.put(keys[1].clone(), answer(1));
        assert_eq!(
            cache.get(&keys[0]).unwrap()[0].data,
            TensorData::Int64(vec![0])
        );
        cache.put(keys[2].clone(), answer(2));
        assert!(cache.get(&keys[0]).is_none(), "the oldest entry went first");
        assert!(cache.get(&keys[2]).is_some());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 2));
    }

    #[test]
    fn entries_expire() {
        let cache = PredictionCache::new(
            "v1",
            &CacheConfig {
                enabled: true,
                max_entries: 2,
                ttl_ms: 0,
            },
        );
        let key = cache.key(&request(0.0)).unwrap();
        cache.put(key.clone(), answer(0));
        assert!(cache.get(&key).is_none());
    }
}
