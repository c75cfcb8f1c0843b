//! One load shard: connects its share of the clients at the planned pace (client k of the
//! schedule goes to load shard k % shards), runs each as a reader and a writer in one task, and
//! hands its measurements over when the run shuts down.

use crate::client::{self, Connection};
use crate::link::{Link, control_writer};
use crate::plan::{Plan, Role};
use crate::publisher;
use crate::reader::{self, Sinks};
use crate::stats::{Counters, ShardLocal, Shared};
use crate::template::{Vars, expand};
use shards::{ShardContext, Task, TaskClass};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub async fn main(context: ShardContext<()>, plan: Arc<Plan>, shared: Arc<Shared>) {
    let local = Rc::new(ShardLocal::new());
    let tasks: Rc<RefCell<Vec<Task<()>>>> = Rc::default();
    let launcher = context.spawn(
        TaskClass::Io,
        launch(
            context.clone(),
            plan.clone(),
            shared.clone(),
            local.clone(),
            tasks.clone(),
        ),
    );
    context.shutdown_requested().await;
    drop(launcher);
    let result = local.take_result();
    if let Ok(mut results) = shared.results.lock() {
        results.push(result);
    }
    // Dropping the tasks cancels the clients; their sockets close with them.
    tasks.borrow_mut().clear();
}

/// Starts this shard's clients at their scheduled connect times.
async fn launch(
    context: ShardContext<()>,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    local: Rc<ShardLocal>,
    tasks: Rc<RefCell<Vec<Task<()>>>>,
) {
    let shards = context.shard_count();
    let me = context.id().index();
    let interval_ns = plan.connect_interval.as_nanos() as u64;
    for (k, (role, index)) in plan.schedule().into_iter().enumerate() {
        if k % shards != me {
            continue;
        }
        let due = shared.start_ns + interval_ns.saturating_mul(k as u64);
        let now = crate::clock::now_ns();
        if due > now {
            shards::time::sleep(Duration::from_nanos(due - now)).await;
        }
        if shared.stopping() {
            return;
        }
        let task = context.spawn(
            TaskClass::Io,
            run_client(role, index, plan.clone(), shared.clone(), local.clone()),
        );
        tasks.borrow_mut().push(task);
    }
}

async fn run_client(
    role: Role,
    index: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    local: Rc<ShardLocal>,
) {
    let mut connection = match client::open(&plan, role, index).await {
        Ok(connection) => connection,
        Err(error) => {
            Counters::add(&shared.counters.connect_failed, 1);
            if role == Role::Pub {
                // It will publish nothing: the run must not wait for it to finish.
                Counters::add(&shared.counters.publishers_done, 1);
            }
            shared.error(format!("{} {index}: {error:#}", role.name()));
            return;
        }
    };
    Counters::add(&shared.counters.connected, 1);
    shared
        .last_connected_ns
        .fetch_max(crate::clock::now_ns(), Ordering::Relaxed);
    let (client_id, seq) = plan.client_id(role, index);
    let vars = Vars {
        seq,
        client_id: &client_id,
        username: plan.username.as_deref().unwrap_or(""),
    };
    match (role, &plan.subscribe, &plan.publish) {
        (Role::Sub, Some(subscribe), _) => {
            let filter = expand(&subscribe.topic, &vars);
            if let Err(error) = connection.subscribe(&filter, subscribe.qos).await {
                Counters::add(&shared.counters.connect_failed, 1);
                shared.error(format!("sub {index}: {error:#}"));
                return;
            }
            Counters::add(&shared.counters.subscribed, 1);
            let streams = (!filter.starts_with("$share/")).then(|| local.streams());
            let sinks = Sinks {
                local: &local,
                shared: &shared,
                streams: streams.as_deref(),
                streams_from_zero: plan.publish.is_some(),
            };
            serve(connection, &plan, sinks, None).await;
        }
        (Role::Pub, _, Some(publish)) => {
            let job = publisher::Job {
                index,
                publishers: plan.clients,
                publisher_id: plan.publisher_id(index),
                topic: expand(&publish.topic, &vars),
                plan: publish,
                keepalive_secs: plan.keepalive_secs,
            };
            let sinks = Sinks {
                local: &local,
                shared: &shared,
                streams: None,
                streams_from_zero: false,
            };
            serve(connection, &plan, sinks, Some(job)).await;
        }
        _ => {
            let sinks = Sinks {
                local: &local,
                shared: &shared,
                streams: None,
                streams_from_zero: false,
            };
            serve(connection, &plan, sinks, None).await;
        }
    }
}

/// Runs the reading and the writing half of one client together until both end.
async fn serve(
    connection: Connection,
    plan: &Plan,
    sinks: Sinks<'_>,
    job: Option<publisher::Job<'_>>,
) {
    let inflight = plan.publish.as_ref().map_or(1, |p| p.inflight);
    let link = Link::new(connection.version, inflight);
    let shared = sinks.shared;
    let Connection {
        read, write, input, ..
    } = connection;
    let reading = reader::run(read, input, &link, sinks);
    match job {
        Some(job) => {
            let writing = publisher::run(write, &link, job, shared);
            futures_lite::future::zip(reading, writing).await;
        }
        None => {
            let writing = control_writer(write, &link, plan.keepalive_secs);
            futures_lite::future::zip(reading, writing).await;
        }
    }
}
