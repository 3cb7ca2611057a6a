//! Tasks of one asyncio loop started eagerly: made, then their first step
//! run at once, as Python 3.12's eager tasks do, on any Python this module
//! supports. And tasks parked by the layer above for another job (what they
//! run is not known here), with a way to run code as one of them.
//!
//! A handler's (or an actor method's) call runs in an asyncio task of its
//! own. Left to the loop, the task's first step would wait for the loop's
//! next turn, and a handler that answers without suspending would cost two
//! turns per packet (the task's step, then the submitter's wake-up). Run at
//! once, `await r.submit(...)` on such a handler never suspends.
//!
//! How a task starts (CPython 3.9 to 3.11, whose `Task.__init__` always
//! schedules the first step with `loop.call_soon`):
//!
//! ```text
//!   make(coro, name, context), then run_first_step
//!     plain loop (BaseEventLoop's create_task and call_soon, no task
//!     factory, not in debug mode), Python >= 3.11:
//!        asyncio.Task(coro, loop=, name=, context=), with loop.call_soon
//!        caught for that one call (see StepCatcher): the step is run here,
//!        no Handle is made or queued
//!     else:
//!        loop.create_task(coro, name=, context=) (3.9/3.10: inside
//!        context.run, then set_name); if the loop's newest ready handle is
//!        the task's step, it is taken off the queue and run here, else the
//!        step is left to the loop (uvloop has no `_ready` queue; a task
//!        factory may have scheduled something after it)
//!   the step runs in the task's context with the task current: the task
//!   that was current (the submitter) steps aside meanwhile
//!   (asyncio.tasks._leave_task / _enter_task)
//! ```
//!
//! Catching the step is what makes the plain path cheaper: on Python 3.11
//! `loop.call_soon` and the `Handle` it makes are four Python frames
//! (`call_soon`, `_call_soon`, `Handle.__init__`, `get_debug`), then the
//! handle is looked at and taken off the ready queue again: about 0.3 µs per
//! task on the machine of bench/python/RESULTS.md. `Task.__init__`
//! looks `call_soon` up on the loop object, so for the length of that one
//! constructor call the loop's instance dict holds a [`StepCatcher`], which
//! keeps the new task's step (told apart by the task's fresh context) and
//! hands any other `call_soon` (made by code that happens to run inside the
//! constructor: a finalizer, a garbage-collector callback, another thread)
//! to the loop's own `call_soon`, unchanged.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};

/// What starting tasks needs from `asyncio` and `contextvars`, looked up
/// once.
struct Asyncio {
    /// `asyncio.tasks._current_tasks` (the dict `_enter_task` and
    /// `_leave_task` keep), read without `current_task`'s Python frame;
    /// `None` if this Python has none.
    current_tasks: Option<Py<PyDict>>,
    /// `asyncio.current_task`, when there is no such dict.
    current_task: Py<PyAny>,
    enter_task: Py<PyAny>,
    leave_task: Py<PyAny>,
    /// `asyncio.Task`.
    task_type: Py<PyAny>,
    /// `asyncio.BaseEventLoop.create_task` and `.call_soon`.
    base_create_task: Py<PyAny>,
    base_call_soon: Py<PyAny>,
    /// `contextvars.Context.run`, unbound.
    context_run: Py<PyAny>,
    /// Whether `create_task` and `Task` take `context=` (3.11 and later).
    context_keyword: bool,
}

static ASYNCIO: PyOnceLock<Asyncio> = PyOnceLock::new();

fn asyncio(py: Python<'_>) -> PyResult<&Asyncio> {
    ASYNCIO.get_or_try_init(py, || {
        let tasks = py.import("asyncio.tasks")?;
        let base = py.import("asyncio.base_events")?.getattr("BaseEventLoop")?;
        Ok::<_, PyErr>(Asyncio {
            current_tasks: tasks
                .getattr("_current_tasks")
                .ok()
                .and_then(|found| found.cast_into_exact::<PyDict>().ok())
                .map(Bound::unbind),
            current_task: tasks.getattr("current_task")?.unbind(),
            enter_task: tasks.getattr("_enter_task")?.unbind(),
            leave_task: tasks.getattr("_leave_task")?.unbind(),
            task_type: tasks.getattr("Task")?.unbind(),
            base_create_task: base.getattr("create_task")?.unbind(),
            base_call_soon: base.getattr("call_soon")?.unbind(),
            context_run: py.import("contextvars")?.getattr("Context")?.getattr("run")?.unbind(),
            context_keyword: py.version_info() >= (3, 11),
        })
    })
}

/// A task's first step: the callable `Task.__init__` scheduled, and the
/// context to run it in.
type Step<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// An attribute the loop object keeps in its instance dict (as
/// `BaseEventLoop` keeps `_task_factory` and `_debug`), read without a
/// lookup in its class.
fn instance_attribute<'py>(
    dict: &Bound<'py, PyDict>,
    name: &Bound<'py, PyString>,
) -> Option<Bound<'py, PyAny>> {
    dict.get_item(name).ok().flatten()
}

/// A task just made, whose first step has not run.
pub(crate) struct NewTask<'py> {
    task: Bound<'py, PyAny>,
    /// Its first step, when it was caught rather than queued.
    caught: Option<Step<'py>>,
}

impl<'py> NewTask<'py> {
    pub(crate) fn task(&self) -> &Bound<'py, PyAny> {
        &self.task
    }
}

/// Starts tasks of one loop (see the module's documentation).
pub(crate) struct EagerTasks {
    event_loop: Py<PyAny>,
    create_task: Py<PyAny>,
    /// The loop's `call_soon`, as bound before any catcher.
    call_soon: Py<PyAny>,
    /// The `pop` and `append` of the loop's queue of ready handles
    /// (`BaseEventLoop._ready`), if it has one.
    ready: Option<(Py<PyAny>, Py<PyAny>)>,
    /// The catcher put in the loop's instance dict while a task is made,
    /// when `create_task` and `call_soon` are `BaseEventLoop`'s own (so
    /// that the task `create_task` would make is an `asyncio.Task`, and
    /// catching `call_soon` skips nothing but a `Handle`).
    plain: Option<Py<StepCatcher>>,
    /// Tasks kept by the layer above for another job (see
    /// [`EagerTasks::park`]): each with the object it runs.
    parked: Mutex<Vec<Parked>>,
    /// The loop object's instance dict (where `BaseEventLoop` keeps its
    /// task factory and debug flag), if it has one.
    loop_dict: Option<Py<PyDict>>,
    /// Whether the loop's current task may be set by writing
    /// `asyncio.tasks._current_tasks` (what `_enter_task` does up to
    /// Python 3.11; later versions may keep it elsewhere).
    current_tasks_writable: bool,
}

/// A parked task and the coroutine it runs.
pub(crate) type Parked = (Py<PyAny>, Py<PyAny>);

/// How many tasks one loop keeps parked at most.
const PARKED_MAX: usize = 64;

impl EagerTasks {
    /// What starting tasks of `lp` needs, looked up once.
    pub(crate) fn new(py: Python<'_>, lp: &Bound<'_, PyAny>) -> PyResult<EagerTasks> {
        let asyncio = asyncio(py)?;
        let call_soon = lp.getattr("call_soon")?;
        let ready = lp.getattr("_ready").ok().and_then(|ready| {
            Some((ready.getattr("pop").ok()?.unbind(), ready.getattr("append").ok()?.unbind()))
        });
        let class = lp.get_type();
        let is_base = |name: &str, base: &Py<PyAny>| class.getattr(name).is_ok_and(|found| found.is(base));
        let plain = if asyncio.context_keyword
            && is_base("create_task", &asyncio.base_create_task)
            && is_base("call_soon", &asyncio.base_call_soon)
        {
            Some(Py::new(py, StepCatcher::new(call_soon.clone().unbind()))?)
        } else {
            None
        };
        Ok(EagerTasks {
            event_loop: lp.clone().unbind(),
            create_task: lp.getattr("create_task")?.unbind(),
            call_soon: call_soon.unbind(),
            ready,
            plain,
            parked: Mutex::new(Vec::new()),
            loop_dict: lp
                .getattr(pyo3::intern!(py, "__dict__"))
                .ok()
                .and_then(|d| d.cast_into_exact::<PyDict>().ok())
                .map(Bound::unbind),
            current_tasks_writable: asyncio.current_tasks.is_some() && py.version_info() < (3, 12),
        })
    }

    /// Makes a task of the loop running `coro` in `context`, named `name`.
    /// `context` is a fresh `contextvars.Context` that nothing else holds
    /// (the task's first step is told apart by it). `Err`: the task could
    /// not be made (`coro` is left unstarted). The task's first step must
    /// then be started with [`EagerTasks::run_first_step`]: it may be held
    /// here rather than queued on the loop.
    pub(crate) fn make<'py>(
        &self,
        py: Python<'py>,
        coro: &Bound<'py, PyAny>,
        name: &Bound<'py, PyString>,
        context: &Bound<'py, PyAny>,
    ) -> PyResult<NewTask<'py>> {
        let asyncio = asyncio(py)?;
        let lp = self.event_loop.bind(py);
        if !asyncio.context_keyword {
            // A task copies the context that is current when it is made.
            let task = context.call_method1(pyo3::intern!(py, "run"), (self.create_task.bind(py), coro))?;
            task.call_method1(pyo3::intern!(py, "set_name"), (name,))?;
            return Ok(NewTask { task, caught: None });
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item(pyo3::intern!(py, "name"), name)?;
        kwargs.set_item(pyo3::intern!(py, "context"), context)?;
        // `BaseEventLoop.create_task` makes an `asyncio.Task` unless the
        // loop has a task factory; both it and the debug flag are
        // attributes of the loop object.
        let plain = self.plain_loop(py).zip(self.plain.as_ref());
        let Some((dict, catcher)) = plain else {
            let task = self.create_task.bind(py).call((coro,), Some(&kwargs))?;
            return Ok(NewTask { task, caught: None });
        };
        let catcher = catcher.bind(py);
        // What `create_task` does here, without its Python frame.
        kwargs.set_item(pyo3::intern!(py, "loop"), lp)?;
        let task_type = asyncio.task_type.bind(py);
        let key = pyo3::intern!(py, "call_soon");
        catcher.get().wait_for(context);
        dict.set_item(key, catcher)?;
        let made = task_type.call((coro,), Some(&kwargs));
        // Whatever happened, the loop's own `call_soon` is visible again.
        let restored = match dict.get_item(key) {
            Ok(Some(found)) if found.is(catcher) => dict.del_item(key),
            Ok(_) => Ok(()),
            Err(err) => Err(err),
        };
        let caught = catcher.get().take(py);
        let task = made?;
        restored?;
        Ok(NewTask { task, caught })
    }

    /// The loop's instance dict, if the loop is plain right now: its
    /// `create_task` and `call_soon` are `BaseEventLoop`'s own (checked
    /// once), it has no task factory, and it is not in debug mode (whose
    /// `call_soon` checks the thread and the callback, and records where it
    /// was called from), and no `call_soon` of its own in the instance
    /// dict (a loop's user watching what is scheduled, or the catcher of a
    /// task being made: a task made by code that runs inside another's
    /// constructor is made the usual way). Only then is a task made here as
    /// `create_task` would make it, and only then are tasks parked.
    fn plain_loop<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyDict>> {
        self.plain.as_ref()?;
        let dict = self.loop_dict.as_ref()?.bind(py).clone();
        let no_factory =
            instance_attribute(&dict, pyo3::intern!(py, "_task_factory")).is_some_and(|f| f.is_none());
        let debug = instance_attribute(&dict, pyo3::intern!(py, "_debug")).map(|debug| debug.is_truthy());
        let own_call_soon = dict.contains(pyo3::intern!(py, "call_soon")).unwrap_or(true);
        (no_factory && !own_call_soon && matches!(debug, Some(Ok(false)))).then_some(dict)
    }

    /// Keeps `task`, which runs `coro` and waits for another job, until
    /// [`EagerTasks::unpark`] hands it out; `false` (not kept) when the loop
    /// is not plain (a task factory or debug mode would see no new task for
    /// the next job) or enough tasks are parked already.
    pub(crate) fn park(&self, py: Python<'_>, task: Py<PyAny>, coro: Py<PyAny>) -> bool {
        self.plain_loop(py).is_some() && self.park_again(task, coro)
    }

    /// [`EagerTasks::park`] for a task just handed out by
    /// [`EagerTasks::unpark`] in the same call from Python (the loop is
    /// still plain).
    pub(crate) fn park_again(&self, task: Py<PyAny>, coro: Py<PyAny>) -> bool {
        let mut parked = self.parked.lock();
        if parked.len() >= PARKED_MAX {
            return false;
        }
        parked.push((task, coro));
        true
    }

    /// The task parked last, if any (and if the loop is still plain).
    pub(crate) fn unpark(&self, py: Python<'_>) -> Option<Parked> {
        if self.parked.lock().is_empty() {
            return None;
        }
        self.plain_loop(py)?;
        self.parked.lock().pop()
    }

    /// Lets go of the parked tasks (the loop closed).
    pub(crate) fn clear_parked(&self) {
        let parked = std::mem::take(&mut *self.parked.lock());
        // Dropped with the lock released: dropping may run Python code.
        drop(parked);
    }

    /// Runs `f` with `task` the loop's current task (what
    /// `asyncio.current_task()` answers), the task that is current (if any)
    /// stepped aside meanwhile, as a step of `task` would run.
    pub(crate) fn run_as<R>(
        &self,
        py: Python<'_>,
        task: &Bound<'_, PyAny>,
        f: impl FnOnce() -> R,
    ) -> PyResult<R> {
        let asyncio = asyncio(py)?;
        let lp = self.event_loop.bind(py);
        let current = self.current_task(py)?;
        if let (true, Some(current_tasks)) = (self.current_tasks_writable, &asyncio.current_tasks) {
            // What `_leave_task` and `_enter_task` do, without their calls.
            let current_tasks = current_tasks.bind(py);
            current_tasks.set_item(lp, task)?;
            let ran = f();
            match &current {
                Some(current) => current_tasks.set_item(lp, current)?,
                None => current_tasks.del_item(lp)?,
            }
            return Ok(ran);
        }
        if let Some(current) = &current {
            asyncio.leave_task.bind(py).call1((lp, current))?;
        }
        let entered = asyncio.enter_task.bind(py).call1((lp, task));
        let ran = entered.map(|_| {
            let ran = f();
            asyncio.leave_task.bind(py).call1((lp, task)).map(|_| ran)
        });
        if let Some(current) = &current {
            asyncio.enter_task.bind(py).call1((lp, current))?;
        }
        ran?
    }

    /// The loop's current task, if any.
    pub(crate) fn current_task<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let asyncio = asyncio(py)?;
        let lp = self.event_loop.bind(py);
        match &asyncio.current_tasks {
            Some(current_tasks) => current_tasks.bind(py).get_item(lp),
            None => {
                asyncio.current_task.bind(py).call1((lp,)).map(|task| Some(task).filter(|t| !t.is_none()))
            }
        }
    }

    /// Runs the first step of `new` now if it can; else leaves it to the
    /// loop. An error is the step's own KeyboardInterrupt or SystemExit
    /// (the task has recorded it), or a failure to run the step here (it is
    /// then left to the loop).
    pub(crate) fn run_first_step(&self, py: Python<'_>, new: NewTask<'_>) -> PyResult<()> {
        match new.caught {
            Some(step) => self.run_step(py, step),
            // Queued by the loop's own `call_soon` (or a task factory).
            None => self.step_from_queue(py, &new.task),
        }
    }

    /// Runs `task`'s first step now if the loop's newest ready handle is
    /// that step, taking it off the queue; else leaves it to the loop.
    fn step_from_queue(&self, py: Python<'_>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some((pop, append)) = &self.ready else { return Ok(()) };
        let Ok(handle) = pop.bind(py).call0() else { return Ok(()) };
        let step = handle.getattr(pyo3::intern!(py, "_callback")).and_then(|callback| {
            let owner = callback.getattr(pyo3::intern!(py, "__self__"))?;
            let context = handle.getattr(pyo3::intern!(py, "_context"))?;
            Ok(owner.is(task).then_some((callback, context)))
        });
        match step {
            Ok(Some(step)) => self.run_step(py, step),
            // Not this task's step: back where it was.
            _ => append.bind(py).call1((handle,)).map(drop),
        }
    }

    /// Runs a task's first step now, as the loop would, with the task that
    /// is current (if any) stepped aside; if it cannot, hands it to the
    /// loop.
    fn run_step(&self, py: Python<'_>, (callback, context): Step<'_>) -> PyResult<()> {
        let asyncio = asyncio(py)?;
        let lp = self.event_loop.bind(py);
        let current = match self.current_task(py) {
            Ok(current) => current,
            Err(err) => return self.schedule(py, callback, context).and(Err(err)),
        };
        if let Some(current) = &current {
            if let Err(err) = asyncio.leave_task.bind(py).call1((lp, current)) {
                return self.schedule(py, callback, context).and(Err(err));
            }
        }
        let stepped = asyncio.context_run.bind(py).call1((context, callback)).map(drop);
        if let Some(current) = &current {
            asyncio.enter_task.bind(py).call1((lp, current))?;
        }
        stepped
    }

    /// Leaves a step to the loop: `call_soon(callback, context=context)`.
    fn schedule(
        &self,
        py: Python<'_>,
        callback: Bound<'_, PyAny>,
        context: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let kwargs = PyDict::new(py);
        kwargs.set_item(pyo3::intern!(py, "context"), context)?;
        self.call_soon.bind(py).call((callback,), Some(&kwargs)).map(drop)
    }
}

/// The loop's `call_soon` while a task is made on the plain path (see the
/// module's documentation): keeps the step of the task being made, and
/// hands every other call to the loop's own `call_soon`.
///
/// The task's step is told apart by its context: `Task.__init__`
/// schedules it with `context=` the context the task was given, a fresh
/// `contextvars.Context` that nothing else holds yet.
#[pyclass(frozen, module = "packetflow._native")]
pub(crate) struct StepCatcher {
    call_soon: Py<PyAny>,
    catch: Mutex<Catch>,
}

enum Catch {
    Idle,
    /// Waiting for the step scheduled in this context.
    Waiting(Py<PyAny>),
    /// The step, kept: its callback and context.
    Caught(Py<PyAny>, Py<PyAny>),
}

impl StepCatcher {
    fn new(call_soon: Py<PyAny>) -> StepCatcher {
        StepCatcher { call_soon, catch: Mutex::new(Catch::Idle) }
    }

    /// Waits for the step of the task about to be made with `context`.
    fn wait_for(&self, context: &Bound<'_, PyAny>) {
        let previous = std::mem::replace(&mut *self.catch.lock(), Catch::Waiting(context.clone().unbind()));
        // Dropped with the lock released: dropping may run Python code.
        drop(previous);
    }

    /// The step caught since [`StepCatcher::wait_for`], if any; idle again.
    fn take<'py>(&self, py: Python<'py>) -> Option<Step<'py>> {
        match std::mem::replace(&mut *self.catch.lock(), Catch::Idle) {
            Catch::Caught(callback, context) => Some((callback.into_bound(py), context.into_bound(py))),
            Catch::Idle | Catch::Waiting(_) => None,
        }
    }
}

#[pymethods]
impl StepCatcher {
    /// `call_soon(callback, *args, context=None)`, taken as it comes: the
    /// one call it keeps is `call_soon(step, context=awaited)`, anything
    /// else goes on as it was made.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if let (Ok(callback), Some(kwargs)) = (args.get_item(0), &kwargs) {
            if args.len() == 1 && kwargs.len() == 1 {
                if let Some(context) = kwargs.get_item(pyo3::intern!(py, "context"))? {
                    let mut catch = self.catch.lock();
                    if matches!(&*catch, Catch::Waiting(awaited) if awaited.is(&context)) {
                        // (What it replaces is that same context, which the
                        // task holds: nothing is freed under the lock.)
                        *catch = Catch::Caught(callback.unbind(), context.unbind());
                        // `Task.__init__` drops what `call_soon` returns.
                        return Ok(None);
                    }
                }
            }
        }
        self.call_soon.bind(py).call(args, kwargs.as_ref()).map(Some)
    }
}
