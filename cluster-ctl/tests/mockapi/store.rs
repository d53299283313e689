//! The object store, as etcd behind kube-apiserver keeps it: every object has a uid, a
//! creationTimestamp and a resourceVersion from one counter that only grows; every change is
//! logged (ADDED / MODIFIED / DELETED with the object before and after) for watches; a compaction
//! forgets the log below a resourceVersion, so a watch from an older one gets 410 Gone.
//! Deletion is graceful where a real server's is: a scheduled pod (and any object with
//! finalizers) gets `deletionTimestamp` and stays, Terminating, until its time is up.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::kinds::Kind;
use super::selectors::Selectors;

/// Where an object lives: its resource type (`pods`, `deployments.apps`), namespace (`""` for
/// cluster-scoped objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(kind: &Kind, namespace: &str, name: &str) -> Self {
        Self {
            resource: kind.resource(),
            namespace: if kind.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One logged change.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub kind: ChangeType,
    pub key: ObjKey,
    /// The object before the change (`None` for ADDED).
    pub before: Option<Value>,
    /// The object after (for DELETED: as it was last, with the deletion's resourceVersion).
    pub after: Value,
}

/// The objects and their history.
#[derive(Debug, Default)]
pub struct Store {
    pub objects: BTreeMap<ObjKey, Value>,
    pub rv: u64,
    pub log: Vec<Change>,
    /// The resourceVersion of the last compaction: the log holds only changes after it, so a
    /// watch from an older resourceVersion gets 410 Gone.
    pub compacted_at: u64,
    uids: u64,
}

/// The mock's clock as RFC 3339 (virtual time under tokio's paused clock).
pub fn timestamp(secs_since_start: u64) -> String {
    // 2026-11-25T10:00:00Z, the fixtures' day.
    const BASE: i64 = 1_795_600_800;
    jiff::Timestamp::from_second(BASE + secs_since_start as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl Store {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn next_uid(&mut self) -> String {
        self.uids += 1;
        format!("7c1a0b2e-0000-4000-8000-{:012x}", self.uids)
    }

    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Stores a new object, setting what the server sets (uid, creationTimestamp,
    /// resourceVersion, namespace); `now` is the mock's clock in seconds.
    pub fn insert(&mut self, key: ObjKey, mut obj: Value, now: u64) -> Value {
        let rv = self.bump();
        let uid = self.next_uid();
        let meta = &mut obj["metadata"];
        if meta["uid"].as_str().is_none_or(str::is_empty) {
            meta["uid"] = json!(uid);
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!(timestamp(now));
        }
        meta["resourceVersion"] = json!(rv.to_string());
        meta["name"] = json!(key.name);
        if key.namespace.is_empty() {
            if let Some(m) = meta.as_object_mut() {
                m.remove("namespace");
            }
        } else {
            meta["namespace"] = json!(key.namespace);
        }
        self.objects.insert(key.clone(), obj.clone());
        self.log.push(Change {
            rv,
            kind: ChangeType::Added,
            key,
            before: None,
            after: obj.clone(),
        });
        obj
    }

    /// Replaces an existing object (its resourceVersion is bumped). An object being deleted
    /// whose last finalizer is gone is removed, as the API server does (a pod on a node waits for
    /// its kubelet instead).
    pub fn replace(&mut self, key: &ObjKey, mut obj: Value) -> Option<Value> {
        let released = !obj["metadata"]["deletionTimestamp"].is_null()
            && obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty)
            && (key.resource != "pods"
                || obj["spec"]["nodeName"].as_str().is_none_or(str::is_empty));
        if released {
            self.objects.insert(key.clone(), obj);
            return self.remove(key);
        }
        let before = self.objects.get(key)?.clone();
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        self.log.push(Change {
            rv,
            kind: ChangeType::Modified,
            key: key.clone(),
            before: Some(before),
            after: obj.clone(),
        });
        Some(obj)
    }

    /// JSON merge patch (RFC 7386) of an existing object: how the mock's scheduler, kubelet and
    /// controllers change status.
    pub fn merge(&mut self, key: &ObjKey, patch: &Value) -> Option<Value> {
        let mut obj = self.objects.get(key)?.clone();
        merge_patch(&mut obj, patch);
        self.replace(key, obj)
    }

    /// Removes an object now (DELETED is logged with a new resourceVersion).
    pub fn remove(&mut self, key: &ObjKey) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.log.push(Change {
            rv,
            kind: ChangeType::Deleted,
            key: key.clone(),
            before: Some(obj.clone()),
            after: obj.clone(),
        });
        Some(obj)
    }

    /// Objects of `kind` (in `namespace`, or all), matching `selectors`, in key order.
    pub fn list(&self, kind: &Kind, namespace: Option<&str>, selectors: &Selectors) -> Vec<Value> {
        let resource = kind.resource();
        self.objects
            .iter()
            .filter(|(k, _)| k.resource == resource)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(_, v)| selectors.matches(v))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Forgets the change log below the current resourceVersion: later watches from an older
    /// resourceVersion get 410 Gone (what an etcd compaction does).
    pub fn compact(&mut self) {
        self.compacted_at = self.rv;
        let at = self.compacted_at;
        self.log.retain(|c| c.rv > at);
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut v, &json!({"a": {"b": null, "e": 3}, "d": [2, 3]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2, 3]}));
    }
}
