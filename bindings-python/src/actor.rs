//! Python behaviours as core actor types.
//!
//! A behaviour has one method per message type: a mapping
//! `{"increment": fn, ...}` of functions taking `(message, ctx)`, or a class
//! whose public functions take `(self, message, ctx)`. The core runs an
//! actor's turns one at a time and hands each to the type's turn function
//! ([`ActorType::from_async`]) with the message and a copy of the state.
//! Here a turn is a call of the method the message's `type` names, made by
//! [`invoke`] exactly as a handler call is: a `def` method on a handler
//! thread, an `async def` one in a task of its own on its loop. The state
//! crosses into Python as `ctx.state` (and `self.state` in the class form),
//! and whatever it is when the method returns crosses back with the reply.
//! Whether that state is kept is the core's decision (only if the turn
//! succeeds, before its deadline), so nothing here undoes anything.
//!
//! The loop that serves an actor's queued messages (the core's, one turn
//! after the other) is driven where the turns run ([`detached`]): on the
//! handler threads for a type whose methods are all `def`, else on the
//! loop of its `async def` methods. A turn that answers then lets the next
//! one start on the same thread, under the same GIL hold, with no hop
//! through a Tokio worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::{self, BoxFuture, FutureExt};
use packetflow::actor::{TurnInput, TurnOutput};
use packetflow::{ActorContext, ActorRef, ActorType, PfError, Reply, Value};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::actor_ref::PyActorRef;
use crate::bridge::HomeLoop;
use crate::context::PyContext;
use crate::detached::{self, Place};
use crate::invoke::{self, LoopBinding, PyCall};
use crate::pool::{NextCall, Pool};
use crate::{convert, runtime};

/// What an actor's turn knows: the :class:`Context` of its message (its
/// packet id, metadata, deadline; ``call``, ``send`` and ``tell`` on its
/// behalf), the actor it runs for, and the actor's state.
///
/// ``state`` is the actor's state for this turn: read it, change it in
/// place, or replace it (``ctx.state = {...}``). It becomes the actor's
/// state only if the method returns normally; an exception (or the
/// deadline passing) leaves the actor's state as it was.
#[pyclass(frozen, extends = PyContext, name = "ActorContext", module = "packetflow")]
pub(crate) struct PyActorContext {
    actor: ActorRef,
    state: Mutex<Py<PyAny>>,
    stop: AtomicBool,
}

#[pymethods]
impl PyActorContext {
    /// The actor this turn runs for.
    #[getter]
    fn actor(&self) -> PyActorRef {
        PyActorRef::from_core(self.actor.clone())
    }

    /// The actor's state during this turn (read, change in place, or
    /// assign a new value).
    #[getter]
    fn state(&self, py: Python<'_>) -> Py<PyAny> {
        self.state.lock().clone_ref(py)
    }

    #[setter]
    fn set_state(&self, value: Py<PyAny>) {
        *self.state.lock() = value;
    }

    /// Stops the actor once this turn returns: its reply is sent, then the
    /// actor and its state are deleted. Has no effect if the turn fails.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        let actor = slf.get().actor.to_string();
        format!("ActorContext(actor={actor:?}, {})", slf.as_super().get().describe())
    }
}

/// One method of a behaviour.
struct Method {
    /// The function (function form), or the method's name (class form: it
    /// is looked up on the turn's instance).
    func: Py<PyAny>,
    /// `type.method`, for messages.
    label: String,
    /// The same as a `str`: the name of an `async def` method's tasks.
    task_name: Py<PyString>,
    is_async: bool,
}

/// An actor type's behaviour, as registered.
struct Behavior {
    /// The class of the class form: an instance is made for each turn.
    class: Option<Py<PyAny>>,
    methods: HashMap<String, Arc<Method>>,
    /// Where `async def` methods run.
    binding: LoopBinding,
    /// Where `def` methods run.
    pool: Arc<Pool>,
    /// Every method is a `def`: mailbox loops run on the handler threads.
    all_def: bool,
}

static ACTOR_METHODS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Builds the core actor type for `behavior` (a mapping of functions or a
/// class); `initial_state`, if given, overrides the class's.
pub(crate) fn actor_type(
    py: Python<'_>,
    name: &str,
    behavior: &Bound<'_, PyAny>,
    initial_state: Option<&Bound<'_, PyAny>>,
    home: &Arc<HomeLoop>,
    pool: &Arc<Pool>,
) -> PyResult<ActorType> {
    let read = ACTOR_METHODS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("packetflow._support")?.getattr("actor_methods")?.unbind())
        })?
        .bind(py)
        .call1((behavior, name))?;
    let (class, listed, declared): (Option<Bound<'_, PyAny>>, Bound<'_, PyList>, Option<Bound<'_, PyAny>>) =
        read.extract()?;
    let mut methods = HashMap::new();
    for item in listed.iter() {
        let item = item.cast_into::<PyTuple>()?;
        let method_name: String = item.get_item(0)?.extract()?;
        let func = item.get_item(1)?;
        let label = format!("{name}.{method_name}");
        let is_async = invoke::is_async(py, &func)?;
        let func = if class.is_some() { PyString::new(py, &method_name).into_any() } else { func };
        let task_name = PyString::new(py, &label).unbind();
        methods.insert(method_name, Arc::new(Method { func: func.unbind(), label, task_name, is_async }));
    }
    let initial = match initial_state.or(declared.as_ref()) {
        Some(state) => Some(convert::to_value(state, "initial_state")?),
        None => None,
    };
    let names: Vec<String> = methods.keys().cloned().collect();
    let behavior = Arc::new(Behavior {
        class: class.map(Bound::unbind),
        binding: LoopBinding::for_registration(py, home, "register_behavior()")?,
        pool: pool.clone(),
        all_def: methods.values().all(|m| !m.is_async),
        methods,
    });
    let drives = behavior.clone();
    let mut spec = ActorType::from_async(move |input: TurnInput| behavior.turn(input))
        .with_message_types(names)
        .with_spawner(move |mailbox| drives.drive(mailbox));
    if let Some(initial) = initial {
        spec = spec.with_initial_state(initial);
    }
    Ok(spec)
}

impl Behavior {
    /// Drives a mailbox loop where this type's turns run.
    fn drive(&self, mailbox: BoxFuture<'static, ()>) {
        if self.all_def {
            return detached::spawn(Place::Pool(self.pool.clone()), mailbox);
        }
        match self.binding.shared_target() {
            Some(target) => detached::spawn(Place::Loop(target), mailbox),
            // No loop to run on: its turns will say so (see `turn`).
            None => {
                if let Ok(rt) = runtime::runtime() {
                    rt.spawn(mailbox);
                }
            }
        }
    }

    /// Runs one turn: the method named by the message's type, where it runs.
    fn turn(self: &Arc<Self>, input: TurnInput) -> BoxFuture<'static, Result<TurnOutput, PfError>> {
        let TurnInput { message_type, message, state, ctx } = input;
        // The core refuses any other message type before a turn runs.
        let Some(method) = self.methods.get(&message_type).cloned() else {
            return future::ready(Err(PfError::failed(format!("no method {message_type}")))).boxed();
        };
        let is_async = method.is_async;
        let call = TurnCall { behavior: self.clone(), method, message, state, ctx: Some(ctx), made: None };
        if !is_async {
            return invoke::on_pool(call, &self.pool).boxed();
        }
        match self.binding.shared_target() {
            Some(target) => invoke::on_loop(call, target).boxed(),
            None => future::ready(Err(PfError::failed(format!(
                "async method {} has no event loop to run on: register the actor type while a loop \
                 runs, or use the reactor from async code first",
                call.method.label
            ))))
            .boxed(),
        }
    }
}

/// What a turn made in Python, read back when the method returns.
struct Made {
    ctx: Py<PyActorContext>,
    /// The class form's instance.
    instance: Option<Py<PyAny>>,
    /// The state object the turn started with.
    state: Py<PyAny>,
}

/// One turn of a behaviour's method.
struct TurnCall {
    behavior: Arc<Behavior>,
    method: Arc<Method>,
    message: Value,
    state: Value,
    /// Taken when the call is made.
    ctx: Option<ActorContext>,
    made: Option<Made>,
}

static OBJECT_NEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl PyCall for TurnCall {
    type Output = TurnOutput;

    fn label(&self) -> &str {
        &self.method.label
    }

    fn task_name<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        self.method.task_name.bind(py).clone()
    }

    fn prepare<'py>(&mut self, py: Python<'py>) -> PyResult<NextCall<'py>> {
        let ctx = self.ctx.take().expect("a turn is prepared once");
        let message = convert::to_py(py, &self.message)?;
        let state = convert::to_py(py, &std::mem::take(&mut self.state))?;
        let actor = ctx.actor().clone();
        let init =
            PyClassInitializer::from(PyContext::new(ctx.context().clone())).add_subclass(PyActorContext {
                actor,
                state: Mutex::new(state.clone().unbind()),
                stop: AtomicBool::new(false),
            });
        let py_ctx = Bound::new(py, init)?;
        let (func, instance) = match &self.behavior.class {
            None => (self.method.func.bind(py).clone(), None),
            Some(class) => {
                // A fresh instance per turn, made without `__init__`: the
                // state is all an actor keeps between turns.
                let new = OBJECT_NEW
                    .get_or_try_init(py, || {
                        Ok::<_, PyErr>(py.import("builtins")?.getattr("object")?.getattr("__new__")?.unbind())
                    })?
                    .bind(py);
                let instance = new.call1((class.bind(py),))?;
                instance.setattr(pyo3::intern!(py, "state"), &state)?;
                let func = instance.getattr(self.method.func.bind(py).cast::<PyString>()?)?;
                (func, Some(instance.unbind()))
            }
        };
        self.made = Some(Made { ctx: py_ctx.clone().unbind(), instance, state: state.unbind() });
        Ok((func, message, py_ctx.into_any()))
    }

    fn returned(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> Result<TurnOutput, PfError> {
        let made = self.made.take().expect("a turn returns after it is prepared");
        let label = &self.method.label;
        let reply = convert::try_to_value(value).map_err(|e| {
            PfError::failed(format!(
                "{label} returned a value that cannot cross as JSON: {}",
                e.describe("result")
            ))
        })?;
        let ctx = made.ctx.bind(py).get();
        // The class form's `self.state` if the method rebound it, else
        // `ctx.state` (rebound, or the first object changed in place).
        let mut state = ctx.state.lock().clone_ref(py).into_bound(py);
        if let Some(instance) = &made.instance {
            let own = instance.bind(py).getattr(pyo3::intern!(py, "state")).map_err(|_| {
                PfError::failed(format!("{label} deleted self.state: assign a new state instead"))
            })?;
            if !own.is(made.state.bind(py)) {
                state = own;
            }
        }
        let state = convert::try_to_value(&state).map_err(|e| {
            PfError::failed(format!(
                "{label} left a state that cannot cross as JSON: {}",
                e.describe("state")
            ))
        })?;
        let reply = if ctx.stop.load(Ordering::Relaxed) { Reply::Stop(reply) } else { Reply::Value(reply) };
        Ok(TurnOutput { reply, state })
    }
}
