// The CPython C API as Swift sees it. Python.h comes from the interpreter that
// builds the module (`-Xcc -I$(python -c 'import sysconfig; ...')`). Swift calls
// the API's functions directly; only what Python.h defines as macros or
// statically initialised structs is wrapped here, so a new Python version is a
// header change, not a rewrite. Uses only the limited, long-stable API surface.
#ifndef APUS_PYTHON_H
#define APUS_PYTHON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

/// The signature of every exported function (METH_FASTCALL).
typedef PyObject *_Nullable (*apus_py_fastcall)(PyObject *_Nullable self, PyObject *_Nonnull const *_Nullable args, Py_ssize_t nargs);

static inline PyObject *_Nonnull apus_py_none(void) { Py_INCREF(Py_None); return Py_None; }
static inline int apus_py_is_none(PyObject *_Nonnull o) { return o == Py_None; }
static inline PyObject *_Nonnull apus_py_bool(int value) { if (value) { Py_INCREF(Py_True); return Py_True; } Py_INCREF(Py_False); return Py_False; }
static inline int apus_py_is_true(PyObject *_Nonnull o) { return o == Py_True; }
static inline void apus_py_incref(PyObject *_Nonnull o) { Py_INCREF(o); }
static inline void apus_py_decref(PyObject *_Nullable o) { Py_XDECREF(o); }

// Exact and subclass type checks (macros over tp_flags in Python.h).
static inline int apus_py_is_bool(PyObject *_Nonnull o) { return PyBool_Check(o); }
static inline int apus_py_is_int(PyObject *_Nonnull o) { return PyLong_Check(o); }
static inline int apus_py_is_float(PyObject *_Nonnull o) { return PyFloat_Check(o); }
static inline int apus_py_is_str(PyObject *_Nonnull o) { return PyUnicode_Check(o); }
static inline int apus_py_is_bytes(PyObject *_Nonnull o) { return PyBytes_Check(o); }
static inline int apus_py_is_list(PyObject *_Nonnull o) { return PyList_Check(o); }
static inline int apus_py_is_tuple(PyObject *_Nonnull o) { return PyTuple_Check(o); }
static inline int apus_py_is_dict(PyObject *_Nonnull o) { return PyDict_Check(o); }
static inline const char *_Nonnull apus_py_type_name(PyObject *_Nonnull o) { return Py_TYPE(o)->tp_name; }

// Borrowed item access without the macros' unchecked casts.
static inline Py_ssize_t apus_py_list_size(PyObject *_Nonnull o) { return PyList_GET_SIZE(o); }
static inline PyObject *_Nonnull apus_py_list_item(PyObject *_Nonnull o, Py_ssize_t i) { return PyList_GET_ITEM(o, i); }
static inline Py_ssize_t apus_py_tuple_size(PyObject *_Nonnull o) { return PyTuple_GET_SIZE(o); }
static inline PyObject *_Nonnull apus_py_tuple_item(PyObject *_Nonnull o, Py_ssize_t i) { return PyTuple_GET_ITEM(o, i); }
// Steals `item`.
static inline void apus_py_list_set(PyObject *_Nonnull o, Py_ssize_t i, PyObject *_Nonnull item) { PyList_SET_ITEM(o, i, item); }
static inline void apus_py_tuple_set(PyObject *_Nonnull o, Py_ssize_t i, PyObject *_Nonnull item) { PyTuple_SET_ITEM(o, i, item); }

static inline PyObject *_Nonnull apus_py_exc_type_error(void) { return PyExc_TypeError; }
static inline PyObject *_Nonnull apus_py_exc_value_error(void) { return PyExc_ValueError; }
static inline PyObject *_Nonnull apus_py_exc_overflow_error(void) { return PyExc_OverflowError; }
static inline PyObject *_Nonnull apus_py_exc_key_error(void) { return PyExc_KeyError; }
static inline PyObject *_Nonnull apus_py_exc_runtime_error(void) { return PyExc_RuntimeError; }

/// A module object for `name`. The definition lives for the process, as CPython requires.
static inline PyObject *_Nullable apus_py_module_create(const char *_Nonnull name, const char *_Nonnull doc) {
    PyModuleDef *def = (PyModuleDef *)calloc(1, sizeof(PyModuleDef));
    if (def == NULL) { return PyErr_NoMemory(); }
    PyModuleDef initial = { PyModuleDef_HEAD_INIT, strdup(name), strdup(doc), -1, NULL, NULL, NULL, NULL, NULL };
    *def = initial;
    return PyModule_Create(def);
}

/// A builtin function calling `body` with `self` as its first argument. The
/// method definition lives for the process, as CPython requires.
static inline PyObject *_Nullable apus_py_function_create(const char *_Nonnull name, const char *_Nonnull doc,
                                                         apus_py_fastcall _Nonnull body, PyObject *_Nonnull self,
                                                         PyObject *_Nullable module_name) {
    PyMethodDef *def = (PyMethodDef *)calloc(1, sizeof(PyMethodDef));
    if (def == NULL) { return PyErr_NoMemory(); }
    def->ml_name = strdup(name);
    def->ml_meth = (PyCFunction)(void (*)(void))body;
    def->ml_flags = METH_FASTCALL;
    def->ml_doc = strdup(doc);
    return PyCFunction_NewEx(def, self, module_name);
}

#endif
