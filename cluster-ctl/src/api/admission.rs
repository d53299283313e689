//! The GPU tenant policy's objects and the bypass pods' create: what `harden` reads and writes (the
//! ValidatingAdmissionPolicy and its binding, cluster-scoped, created or replaced keeping the
//! live resourceVersion) and the one create whose refusal is an answer rather than an error (a
//! bypass pod refused at admission is contained, and the server's `Status` is its evidence).
//! Every request goes through [`Cluster::call`], under its deadline and retries.

use std::fmt::Debug;

use k8s_openapi::ClusterResourceScope;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{ListParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ApiError, Cluster, Op};

/// What the API server did with a bypass pod.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Created (the Pod as the server returned it).
    Created(Box<Pod>),
    /// Refused at admission by a policy or webhook: the server's `Status`, as JSON with its
    /// `kind` and `apiVersion`, as it was sent.
    Refused(Value),
}

/// A refusal by an admission check (a ValidatingAdmissionPolicy or a webhook), as opposed to RBAC,
/// a missing namespace or an invalid object: those are errors of the run, not containment.
fn admission_refusal(s: &kube::core::Status) -> Option<Value> {
    let facts = lab_report::k8s::StatusFacts {
        status: s.status.as_ref().map_or_else(
            || "Failure".to_owned(),
            |st| match st {
                kube::core::response::StatusSummary::Success => "Success".to_owned(),
                kube::core::response::StatusSummary::Failure => "Failure".to_owned(),
            },
        ),
        code: s.code,
        reason: s.reason.clone(),
        message: s.message.clone(),
    };
    facts.admission_denial()?;
    let mut v = serde_json::to_value(s).ok()?;
    let obj = v.as_object_mut()?;
    obj.insert("kind".into(), json!("Status"));
    obj.insert("apiVersion".into(), json!("v1"));
    obj.entry("metadata").or_insert(json!({}));
    obj.entry("status").or_insert(json!("Failure"));
    Some(v)
}

impl Cluster {
    /// Every pod of the cluster (what `harden` checks the exempt list against).
    pub async fn all_pods(&self) -> Result<Vec<Pod>, ApiError> {
        self.list(
            &self.all::<Pod>(),
            Op::of::<Pod>("list", None, None),
            &ListParams::default(),
        )
        .await
    }

    /// The policy and the binding named `name`, as the server holds them (`None`: absent).
    pub async fn admission_policy(
        &self,
        name: &str,
    ) -> Result<
        (
            Option<ValidatingAdmissionPolicy>,
            Option<ValidatingAdmissionPolicyBinding>,
        ),
        ApiError,
    > {
        let policy = self
            .get_opt(
                &self.all::<ValidatingAdmissionPolicy>(),
                Op::of::<ValidatingAdmissionPolicy>("get", None, Some(name)),
                name,
            )
            .await?;
        let binding = self
            .get_opt(
                &self.all::<ValidatingAdmissionPolicyBinding>(),
                Op::of::<ValidatingAdmissionPolicyBinding>("get", None, Some(name)),
                name,
            )
            .await?;
        Ok((policy, binding))
    }

    /// Creates `want` when the server has none (`live` is `None`), else replaces it with the live
    /// resourceVersion, so that a concurrent change is refused (409) rather than overwritten.
    pub async fn create_or_replace<K>(&self, want: &K, live: Option<&K>) -> Result<(), ApiError>
    where
        K: Resource<Scope = ClusterResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug,
    {
        let api = self.all::<K>();
        let name = want.meta().name.clone().unwrap_or_default();
        let pp = PostParams::default();
        match live {
            None => {
                let op = Op::of::<K>("create", None, Some(&name));
                self.call(&op, || api.create(&pp, want)).await?;
            }
            Some(l) => {
                let mut obj = want.clone();
                obj.meta_mut().resource_version = l.meta().resource_version.clone();
                let op = Op::of::<K>("update", None, Some(&name));
                self.call(&op, || api.replace(&name, &pp, &obj)).await?;
            }
        }
        Ok(())
    }

    /// Creates a bypass pod: [`Admission::Refused`] with the server's `Status` when an admission
    /// policy or webhook refuses it; any other failure is an error. A namesake left by an earlier
    /// run is deleted (and waited out, under `wait`) first, so the pod is the one rendered now; a
    /// 409 (one appeared in between) is met once more the same way.
    pub async fn create_bypass_pod(
        &self,
        namespace: &str,
        pod: &Pod,
        wait: std::time::Duration,
    ) -> Result<Admission, ApiError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api = self.namespaced::<Pod>(namespace);
        let op = Op::of::<Pod>("create", Some(namespace), Some(&name));
        let pp = PostParams::default();
        let (api, pp) = (&api, &pp);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self
                .get_namespaced::<Pod>(namespace, &name)
                .await?
                .is_some()
            {
                crate::progress(&format!(
                    "pod {name} is left from an earlier run; deleting it first"
                ));
                self.delete_pod(namespace, &name, wait).await?;
            }
            let created = self
                .call(&op, || async move {
                    match api.create(pp, pod).await {
                        Ok(p) => Ok(Admission::Created(Box::new(p))),
                        Err(kube::Error::Api(s)) => match admission_refusal(&s) {
                            Some(v) => Ok(Admission::Refused(v)),
                            None => Err(kube::Error::Api(s)),
                        },
                        Err(e) => Err(e),
                    }
                })
                .await;
            match created {
                // A namesake appeared between the check and the create: once more, from the check.
                Err(ApiError::Status { code: 409, .. }) if attempt < 2 => continue,
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> kube::core::Status {
        kube::core::Status::failure(message, reason).with_code(code)
    }

    #[test]
    fn only_an_admission_checks_denial_is_a_refusal() {
        let policy = status(
            403,
            "Forbidden",
            "pods \"hami-bypass-b1\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'p' denied request: no [hami-isolation-lab: visible-devices-env]",
        );
        let v = admission_refusal(&policy).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["code"], 403);
        let webhook = status(
            400,
            "BadRequest",
            "admission webhook \"vgpu.hami.io\" denied the request: container cuda is privileged",
        );
        assert!(admission_refusal(&webhook).is_some());
        // RBAC's 403, a missing namespace and a server error are not refusals at admission.
        let rbac = status(
            403,
            "Forbidden",
            "pods is forbidden: User \"system:serviceaccount:x:y\" cannot create resource \"pods\" in API group \"\" in the namespace \"lab\"",
        );
        assert!(admission_refusal(&rbac).is_none());
        assert!(
            admission_refusal(&status(404, "NotFound", "namespaces \"lab\" not found")).is_none()
        );
        assert!(admission_refusal(&status(500, "InternalError", "denied request: x")).is_none());
    }
}
