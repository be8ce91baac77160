//! Many operations as one change (`apply`).
//!
//! A request context that carries a [`Batch`] makes every operation plan against the
//! batch's own view instead of committing: the plan's writes are applied to that view, so
//! the next operation sees them (a pool created by one step is there for the listener of
//! the next), and the plan is kept. [`Batch::finish`] joins the kept plans into one, which
//! the engine commits as a single transaction: everything, or nothing.
//!
//! Joining keeps every compare on a key the batch had not written yet (those name
//! revisions of the real view); compares on keys an earlier step wrote name revisions of
//! the batch's view, which the store never had, and are dropped: the earlier step's own
//! compare on that key, or the guard of its load balancer, covers them.

use std::collections::HashMap;
use std::sync::Arc;

use fulcrum_model::{ResourceRef, Timestamp, WorkRequest, WorkRequestId, WorkRequestStatus};
use fulcrum_store::{Compare, Event, EventKind, KeyValue, Op, WatchBatch};
use parking_lot::Mutex;

use crate::engine::Plan;
use crate::secret_key::SecretKey;
use crate::{Config, ControlError, Outcome, Scope, keys};

/// Operations collected for one commit. Cheap to clone: clones share the batch.
#[derive(Clone)]
pub struct Batch(Arc<Mutex<State>>);

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batch")
    }
}

struct State {
    /// The view planned on, with every kept plan applied.
    view: Config,
    secret_key: Arc<SecretKey>,
    now: Timestamp,
    joined: Plan,
    /// Keys the kept plans write, with the place of the write in `joined`: a transaction
    /// writes a key once, so a later step's write of a key replaces the earlier one.
    written: HashMap<String, usize>,
}

fn compare_key(c: &Compare) -> &str {
    match c {
        Compare::ModRevision { key, .. }
        | Compare::CreateRevision { key, .. }
        | Compare::Value { key, .. } => key,
    }
}

impl Batch {
    pub(crate) fn new(
        view: Config,
        secret_key: Arc<SecretKey>,
        now: Timestamp,
        operation: &'static str,
    ) -> Self {
        Batch(Arc::new(Mutex::new(State {
            view,
            secret_key,
            now,
            joined: Plan::new(operation),
            written: HashMap::new(),
        })))
    }

    /// Reads the batch's view as a caller of `scope` sees it. `f` must not start an
    /// operation (the batch is locked).
    pub(crate) fn read<T>(&self, scope: &Scope, f: impl FnOnce(&Config) -> T) -> T {
        f(&self.0.lock().view.scoped(scope))
    }

    /// Plans one operation on the batch's view and keeps it. The outcome names what the
    /// operation created or changed; its work request is the batch's, made at commit.
    pub(crate) fn add(
        &self,
        operation: &'static str,
        scope: &Scope,
        plan_fn: &dyn Fn(&Config, Timestamp) -> Result<Plan, ControlError>,
    ) -> Result<Outcome, ControlError> {
        let mut st = self.0.lock();
        // As a change on its own is checked (`commit_change`): planned on what the caller may
        // see, then on the whole view, and its load balancer must be the caller's.
        if !scope.is_all() {
            plan_fn(&st.view.scoped(scope), st.now)?;
        }
        let plan = plan_fn(&st.view, st.now)?;
        scope.check_change(
            plan.lb.as_ref(),
            plan.lb
                .as_ref()
                .and_then(|id| st.view.loadbalancers.get(id))
                .map(|v| &v.value),
            plan.lb_written.as_ref(),
        )?;
        scope.check_owned(&plan.owned_labels_written)?;
        let result = plan.result.clone();
        st.keep(plan)?;
        Ok(Outcome {
            work_request: WorkRequest {
                id: WorkRequestId(String::new()),
                operation: operation.to_owned(),
                loadbalancer_id: None,
                resources: Vec::new(),
                status: WorkRequestStatus::Accepted,
                revision: st.view.revision,
                request_id: String::new(),
                principal: String::new(),
                message: String::new(),
                error: None,
                accepted_at: st.now,
                finished_at: None,
            },
            result,
            revision: st.view.revision,
            replayed: false,
        })
    }

    /// Whether any kept plan writes something.
    pub(crate) fn writes_anything(&self) -> bool {
        !self.0.lock().joined.writes.is_empty()
    }

    /// The kept plans as one. `result` names what the caller reports as the change's
    /// result (the first load balancer of an apply file, say).
    pub(crate) fn finish(self, result: Option<ResourceRef>) -> Plan {
        let mut st = self.0.lock();
        let operation = st.joined.operation;
        let mut plan = std::mem::replace(&mut st.joined, Plan::new(operation));
        plan.result = result;
        plan.scope_checked = true;
        plan
    }
}

impl State {
    /// Joins `plan` to the others and applies its writes to the view.
    fn keep(&mut self, plan: Plan) -> Result<(), ControlError> {
        let joined = &mut self.joined;
        for c in plan.compares {
            if !self.written.contains_key(compare_key(&c)) {
                joined.compares.push(c);
            }
        }
        // Guards are taken from the real view at commit: only for what existed before.
        for lb in plan.lb.into_iter().chain(plan.touch_lbs) {
            if !self.written.contains_key(&keys::lb(&lb)) && !joined.touch_lbs.contains(&lb) {
                joined.touch_lbs.push(lb);
            }
        }
        for pool in plan.touch_pools {
            if !self.written.contains_key(&keys::pool(&pool)) && !joined.touch_pools.contains(&pool)
            {
                joined.touch_pools.push(pool);
            }
        }
        for r in plan.resources {
            if !joined.resources.contains(&r) {
                joined.resources.push(r);
            }
        }
        let revision = self.view.revision + 1;
        let mut events = Vec::with_capacity(plan.writes.len());
        for w in &plan.writes {
            events.push(match w.to_op(&self.secret_key)? {
                Op::Put { key, value } => Event {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key,
                        value,
                        create_revision: revision,
                        mod_revision: revision,
                        version: 1,
                    },
                },
                Op::Touch { .. } => {
                    return Err(ControlError::Internal("a plan touched a key".into()));
                }
                Op::Delete { key } => Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key,
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: revision,
                        version: 0,
                    },
                },
            });
        }
        self.view
            .apply(&WatchBatch { revision, events }, &self.secret_key);
        for w in plan.writes {
            match self.written.get(w.key()) {
                Some(&at) => joined.writes[at] = w,
                None => {
                    self.written.insert(w.key().to_owned(), joined.writes.len());
                    joined.writes.push(w);
                }
            }
        }
        Ok(())
    }
}
