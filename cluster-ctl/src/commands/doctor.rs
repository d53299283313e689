//! `cluster-ctl doctor [--from DIR]`: the diagnosis engine (`crate::diagnose`) over the cluster's
//! objects, events and HAMi's container logs, and with `--from` an earlier run's probe reports and
//! captured logs. (`doctor --explain` needs no cluster: `main` calls the engine directly.)

use std::path::Path;

use super::{Ctx, Failure, Outcome};
use crate::api::Cluster;

pub async fn doctor(cluster: &Cluster, ctx: &Ctx, from: Option<&Path>) -> Result<Outcome, Failure> {
    crate::diagnose::doctor(cluster, ctx, from).await
}
