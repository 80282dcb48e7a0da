/*
 * _dmsbus_ddbjson: the compiled fast path of dmsbus.ddbjson.Decoder.
 *
 * It decodes the common DynamoDB JSON shapes (S, N, M, L, NULL, BOOL, SS) itself and hands
 * everything else -- other types, non-dict or multi-key attribute values, numbers it does not
 * recognise, anything malformed -- to the pure-Python decoder, so both give the same values and
 * the same errors. It never raises an error of its own beyond MemoryError and RecursionError.
 *
 * Built against the stable ABI (Py_LIMITED_API 3.11): one binary serves CPython 3.11 here and
 * 3.12 on Lambda. native/build.py compiles it; tests/unit/test_ddbjson.py checks it against
 * the Python decoder and boto3's TypeDeserializer.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* What a call decodes with: the Python number function of the decoder's mode, the Python
 * fallback for one attribute value, and whether non-integral numbers stay text. */
typedef struct {
    PyObject *number;
    PyObject *fallback;
    int text;
} Context;

enum Tag { TAG_OTHER, TAG_S, TAG_N, TAG_M, TAG_L, TAG_NULL, TAG_BOOL, TAG_SS };

static PyObject *interned[8];
static const char *const tag_names[8] = {NULL, "S", "N", "M", "L", "NULL", "BOOL", "SS"};

static enum Tag tag_of(PyObject *tag) {
    /* JSON object keys of one character are CPython's shared singletons: compare pointers
     * first, then text for keys made some other way. */
    for (int i = TAG_S; i <= TAG_SS; i++) {
        if (tag == interned[i]) return (enum Tag)i;
    }
    if (!PyUnicode_CheckExact(tag)) return TAG_OTHER;
    for (int i = TAG_S; i <= TAG_SS; i++) {
        if (PyUnicode_CompareWithASCIIString(tag, tag_names[i]) == 0) return (enum Tag)i;
    }
    return TAG_OTHER;
}

static PyObject *call(PyObject *function, PyObject *argument) {
    return PyObject_CallFunctionObjArgs(function, argument, NULL);
}

/* An N value: plain ASCII integers become ints here; in text mode a plain decimal whose
 * fraction does not end in 0 stays the same string (DynamoDB normalizes numbers, so it is
 * not integral). Everything else -- exponents, trailing zeros, junk -- goes to Python. */
static PyObject *number(Context *ctx, PyObject *raw) {
    if (!PyUnicode_CheckExact(raw)) return call(ctx->number, raw);
    Py_ssize_t size;
    const char *text = PyUnicode_AsUTF8AndSize(raw, &size);
    if (text == NULL) {
        PyErr_Clear(); /* e.g. lone surrogates: Python decides and names the value */
        return call(ctx->number, raw);
    }
    Py_ssize_t start = (size > 0 && text[0] == '-') ? 1 : 0;
    Py_ssize_t dot = -1;
    for (Py_ssize_t i = start; i < size; i++) {
        char c = text[i];
        if (c >= '0' && c <= '9') continue;
        if (c == '.' && dot < 0) {
            dot = i;
            continue;
        }
        return call(ctx->number, raw);
    }
    Py_ssize_t digits = size - start - (dot >= 0 ? 1 : 0);
    if (digits == 0) return call(ctx->number, raw);
    if (dot < 0) {
        if (digits <= 18) {
            long long value = 0;
            for (Py_ssize_t i = start; i < size; i++) value = value * 10 + (text[i] - '0');
            return PyLong_FromLongLong(start ? -value : value);
        }
        return PyLong_FromString(text, NULL, 10);
    }
    if (ctx->text && text[size - 1] != '0' && text[size - 1] != '.') {
        Py_INCREF(raw);
        return raw;
    }
    return call(ctx->number, raw);
}

static PyObject *decode_map(Context *ctx, PyObject *map);

static PyObject *decode_list(Context *ctx, PyObject *items);

static PyObject *decode_value(Context *ctx, PyObject *av) {
    if (!PyDict_CheckExact(av) || PyDict_Size(av) != 1) return call(ctx->fallback, av);
    Py_ssize_t position = 0;
    PyObject *tag, *raw;
    PyDict_Next(av, &position, &tag, &raw);
    switch (tag_of(tag)) {
        case TAG_S:
            if (!PyUnicode_CheckExact(raw)) break;
            Py_INCREF(raw);
            return raw;
        case TAG_N:
            return number(ctx, raw);
        case TAG_M:
            if (!PyDict_CheckExact(raw)) break;
            return decode_map(ctx, raw);
        case TAG_L:
            if (!PyList_CheckExact(raw)) break;
            return decode_list(ctx, raw);
        case TAG_NULL:
            Py_RETURN_NONE;
        case TAG_BOOL:
            if (raw != Py_True && raw != Py_False) break;
            Py_INCREF(raw);
            return raw;
        case TAG_SS: {
            if (!PyList_CheckExact(raw)) break;
            PyObject *sorted = PySequence_List(raw);
            if (sorted == NULL) return NULL;
            if (PyList_Sort(sorted) < 0) {
                Py_DECREF(sorted);
                return NULL;
            }
            return sorted;
        }
        case TAG_OTHER:
            break;
    }
    return call(ctx->fallback, av);
}

static PyObject *decode_list(Context *ctx, PyObject *items) {
    if (Py_EnterRecursiveCall(" while decoding a DynamoDB L value")) return NULL;
    Py_ssize_t size = PyList_Size(items);
    PyObject *out = PyList_New(size);
    if (out == NULL) goto done;
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *item = PyList_GetItem(items, i); /* borrowed */
        PyObject *value = item == NULL ? NULL : decode_value(ctx, item);
        if (value == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SetItem(out, i, value); /* steals value */
    }
done:
    Py_LeaveRecursiveCall();
    return out;
}

static PyObject *decode_map(Context *ctx, PyObject *map) {
    if (Py_EnterRecursiveCall(" while decoding a DynamoDB M value")) return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) goto done;
    Py_ssize_t position = 0;
    PyObject *name, *av;
    while (PyDict_Next(map, &position, &name, &av)) {
        PyObject *value = decode_value(ctx, av);
        if (value == NULL || PyDict_SetItem(out, name, value) < 0) {
            Py_XDECREF(value);
            Py_CLEAR(out);
            goto done;
        }
        Py_DECREF(value);
    }
done:
    Py_LeaveRecursiveCall();
    return out;
}

/* image(image, number, fallback, text) and value(av, number, fallback, text). */
static int context(PyObject *const *args, Py_ssize_t nargs, const char *name, Context *ctx) {
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "%s() takes 4 arguments (%zd given)", name, nargs);
        return -1;
    }
    int text = PyObject_IsTrue(args[3]);
    if (text < 0) return -1;
    ctx->number = args[1];
    ctx->fallback = args[2];
    ctx->text = text;
    return 0;
}

static PyObject *image(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Context ctx;
    if (context(args, nargs, "image", &ctx) < 0) return NULL;
    if (!PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "image() takes a dict");
        return NULL;
    }
    return decode_map(&ctx, args[0]);
}

static PyObject *value(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Context ctx;
    if (context(args, nargs, "value", &ctx) < 0) return NULL;
    return decode_value(&ctx, args[0]);
}

static PyMethodDef methods[] = {
    {"image", (PyCFunction)(void (*)(void))image, METH_FASTCALL,
     "image(image: dict, number, fallback, text: bool) -> dict: decode an item image."},
    {"value", (PyCFunction)(void (*)(void))value, METH_FASTCALL,
     "value(av, number, fallback, text: bool): decode one attribute value."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_dmsbus_ddbjson",
    "Compiled fast path of dmsbus.ddbjson.Decoder (see native/ddbjson.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__dmsbus_ddbjson(void) {
    for (int i = TAG_S; i <= TAG_SS; i++) {
        if (interned[i] == NULL) {
            interned[i] = PyUnicode_InternFromString(tag_names[i]);
            if (interned[i] == NULL) return NULL;
        }
    }
    return PyModule_Create(&module_definition);
}
