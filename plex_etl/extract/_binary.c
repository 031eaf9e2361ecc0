/* The binary read: one prepared statement on the reader's own libmariadb connection,
 * its rows fetched into Arrow-layout column buffers with the GIL released.
 *
 * Why: the text protocol makes the server print every number, date and time (most of its
 * CPU per row) and the client parse them back; the binary protocol sends them as they are
 * stored. Why on the reader's own connection (mysqlclient's MYSQL*, taken from its
 * native-connection capsule): the statement then runs inside the reader's consistent
 * snapshot, FOUND_ROWS() after it counts its rows, and the session's timeouts and the
 * reader's KILL on stop apply to it unchanged (plex_etl/extract/stream.py).
 *
 * Each column comes out as one of three kinds, asked for by the caller and kept only where
 * the value is exactly the one the text protocol gives once converted by the type map:
 *   'i'  int64 (an integer column of at most 63 bits of magnitude),
 *   'f'  float64 (DOUBLE, or FLOAT widened exactly),
 *   'b'  bytes: the server's own text protocol bytes. Strings, BLOBs, DECIMAL, BIT, ENUM,
 *        SET, JSON travel as those bytes in the binary protocol too; integers, YEAR, DATE,
 *        DATETIME, TIMESTAMP and TIME travel as numbers and are printed here exactly as the
 *        server prints them (zero padding, zero dates, fractional digits of the column's
 *        precision, TIME beyond 24 h and negative). FLOAT and DOUBLE cannot be printed
 *        here as the server does: the caller has the server print them (CAST AS CHAR).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <mysql.h>
#include <errmsg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define SMALL 256 /* bytes fetched in the row itself; a longer value is fetched again, whole */

typedef struct {
    char kind;                  /* 'i', 'f' or 'b' */
    MYSQL_FIELD field;          /* type, flags, decimals, length of the result column */
    union { long long i; double d; MYSQL_TIME t; } scalar;
    char small[SMALL];
    my_bool is_null, error;
    unsigned long length;
    /* this fetch's column: validity bitmap, fixed-width values or int32 offsets, data */
    uint8_t *validity;
    char *values;
    char *data;
    size_t data_len, data_cap;
    Py_ssize_t nulls;
} Column;

typedef struct {
    PyObject_HEAD
    PyObject *owner; /* the mysqlclient connection: the MYSQL* lives as long as it does */
    MYSQL_STMT *stmt;
    unsigned int ncols;
    Column *cols;
    MYSQL_BIND *binds;
    size_t rows_cap;
    int done;
} Statement;

static PyObject *OperationalError; /* MySQLdb.OperationalError: errors read as mysqlclient's */

static PyObject *raise_stmt_error(MYSQL_STMT *stmt) {
    PyObject *args = Py_BuildValue("(is)", (int)mysql_stmt_errno(stmt), mysql_stmt_error(stmt));
    if (args) {
        PyErr_SetObject(OperationalError, args);
        Py_DECREF(args);
    }
    return NULL;
}

static int is_integer(enum enum_field_types type) {
    return type == MYSQL_TYPE_TINY || type == MYSQL_TYPE_SHORT || type == MYSQL_TYPE_INT24 ||
           type == MYSQL_TYPE_LONG || type == MYSQL_TYPE_LONGLONG || type == MYSQL_TYPE_YEAR;
}

static int is_temporal(enum enum_field_types type) {
    return type == MYSQL_TYPE_DATE || type == MYSQL_TYPE_DATETIME || type == MYSQL_TYPE_TIMESTAMP ||
           type == MYSQL_TYPE_TIME;
}

static void free_columns(Statement *self) {
    if (self->cols) {
        for (unsigned int i = 0; i < self->ncols; i++) {
            free(self->cols[i].validity);
            free(self->cols[i].values);
            free(self->cols[i].data);
        }
    }
    free(self->cols);
    free(self->binds);
    self->cols = NULL;
    self->binds = NULL;
}

static void close_statement(Statement *self) {
    if (self->stmt) {
        MYSQL_STMT *stmt = self->stmt;
        self->stmt = NULL;
        Py_BEGIN_ALLOW_THREADS
        mysql_stmt_close(stmt);
        Py_END_ALLOW_THREADS
    }
}

static void Statement_dealloc(Statement *self) {
    close_statement(self);
    free_columns(self);
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Bind each result column by the kind the caller asked for, or 'b' where that kind would
 * not give the exact value. Returns -1 with a Python error set. */
static int bind_columns(Statement *self, const char *wants, Py_ssize_t nwants) {
    MYSQL_RES *meta = mysql_stmt_result_metadata(self->stmt);
    if (!meta) {
        raise_stmt_error(self->stmt);
        return -1;
    }
    self->ncols = mysql_num_fields(meta);
    if ((Py_ssize_t)self->ncols != nwants) {
        mysql_free_result(meta);
        PyErr_Format(PyExc_ValueError, "the statement has %u columns, %zd kinds were given", self->ncols, nwants);
        return -1;
    }
    self->cols = calloc(self->ncols, sizeof(Column));
    self->binds = calloc(self->ncols, sizeof(MYSQL_BIND));
    if (!self->cols || !self->binds) {
        mysql_free_result(meta);
        PyErr_NoMemory();
        return -1;
    }
    MYSQL_FIELD *fields = mysql_fetch_fields(meta);
    for (unsigned int i = 0; i < self->ncols; i++) {
        Column *col = &self->cols[i];
        MYSQL_BIND *bind = &self->binds[i];
        col->field = fields[i];
        /* the names and other strings belong to `meta`, freed below: only numbers are kept */
        col->field.name = col->field.org_name = col->field.table = col->field.org_table = NULL;
        col->field.db = col->field.catalog = col->field.def = NULL;
        enum enum_field_types type = col->field.type;
        int is_unsigned = (col->field.flags & UNSIGNED_FLAG) != 0;
        char want = wants[i];
        if (want == 'i' && is_integer(type) && type != MYSQL_TYPE_YEAR &&
            !(type == MYSQL_TYPE_LONGLONG && is_unsigned))
            col->kind = 'i';
        else if (want == 'f' && (type == MYSQL_TYPE_DOUBLE || type == MYSQL_TYPE_FLOAT))
            col->kind = 'f';
        else if (type == MYSQL_TYPE_DOUBLE || type == MYSQL_TYPE_FLOAT) {
            mysql_free_result(meta);
            PyErr_Format(PyExc_ValueError, "column %u: a FLOAT or DOUBLE is read as float64 or printed by the server", i);
            return -1;
        } else
            col->kind = 'b';
        bind->is_null = &col->is_null;
        bind->error = &col->error;
        bind->length = &col->length;
        if (col->kind == 'f') {
            bind->buffer_type = MYSQL_TYPE_DOUBLE;
            bind->buffer = &col->scalar.d;
        } else if (is_integer(type)) {
            bind->buffer_type = MYSQL_TYPE_LONGLONG;
            bind->buffer = &col->scalar.i;
            bind->is_unsigned = is_unsigned;
        } else if (is_temporal(type)) {
            bind->buffer_type = type;
            bind->buffer = &col->scalar.t;
            bind->buffer_length = sizeof(MYSQL_TIME);
        } else {
            bind->buffer_type = MYSQL_TYPE_STRING;
            bind->buffer = col->small;
            bind->buffer_length = SMALL;
        }
    }
    mysql_free_result(meta);
    if (mysql_stmt_bind_result(self->stmt, self->binds)) {
        raise_stmt_error(self->stmt);
        return -1;
    }
    return 0;
}

static int Statement_init(Statement *self, PyObject *args, PyObject *kwds) {
    PyObject *owner;
    const char *sql, *wants;
    Py_ssize_t sql_len, nwants;
    if (!PyArg_ParseTuple(args, "Os#s#", &owner, &sql, &sql_len, &wants, &nwants))
        return -1;
    PyObject *capsule = PyObject_CallMethod(owner, "_get_native_connection", NULL);
    if (!capsule)
        return -1;
    MYSQL *mysql = PyCapsule_GetPointer(capsule, "_mysql.connection.native_connection");
    Py_DECREF(capsule);
    if (!mysql)
        return -1;
    Py_INCREF(owner);
    self->owner = owner;
    self->stmt = mysql_stmt_init(mysql);
    if (!self->stmt) {
        PyErr_NoMemory();
        return -1;
    }
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = mysql_stmt_prepare(self->stmt, sql, (unsigned long)sql_len);
    Py_END_ALLOW_THREADS
    if (failed) {
        raise_stmt_error(self->stmt);
        return -1;
    }
    if (bind_columns(self, wants, nwants))
        return -1;
    Py_BEGIN_ALLOW_THREADS
    failed = mysql_stmt_execute(self->stmt); /* unbuffered: rows are read by fetch */
    Py_END_ALLOW_THREADS
    if (failed) {
        raise_stmt_error(self->stmt);
        return -1;
    }
    return 0;
}

static int reserve(char **buffer, size_t *cap, size_t need) {
    if (need <= *cap)
        return 0;
    size_t size = *cap ? *cap : 4096;
    while (size < need)
        size *= 2;
    char *grown = realloc(*buffer, size);
    if (!grown)
        return -1;
    *buffer = grown;
    *cap = size;
    return 0;
}

/* The value as the server's text protocol prints it. */
static int print_number(Column *col, char *out) {
    const MYSQL_FIELD *f = &col->field;
    int width = (f->flags & ZEROFILL_FLAG) ? (int)f->length : 0;
    if (f->flags & UNSIGNED_FLAG)
        return sprintf(out, "%0*llu", width, (unsigned long long)col->scalar.i);
    return sprintf(out, "%0*lld", width, col->scalar.i);
}

static int print_temporal(Column *col, char *out) {
    const MYSQL_TIME *t = &col->scalar.t;
    unsigned int decimals = col->field.decimals;
    int n;
    switch (col->field.type) {
    case MYSQL_TYPE_DATE:
        return sprintf(out, "%04u-%02u-%02u", t->year, t->month, t->day);
    case MYSQL_TYPE_TIME:
        n = sprintf(out, "%s%02u:%02u:%02u", t->neg ? "-" : "", t->hour, t->minute, t->second);
        break;
    default:
        n = sprintf(out, "%04u-%02u-%02u %02u:%02u:%02u", t->year, t->month, t->day, t->hour, t->minute,
                    t->second);
    }
    if (decimals > 0 && decimals <= 6) {
        unsigned long part = t->second_part;
        for (unsigned int d = decimals; d < 6; d++)
            part /= 10;
        n += sprintf(out + n, ".%0*lu", (int)decimals, part);
    } else if (decimals > 6 && t->second_part) { /* an expression of unknown precision */
        n += sprintf(out + n, ".%06lu", t->second_part);
    }
    return n;
}

/* Append the current row's value of column `c` at row `r`: 0, or -1 (error: message in *why). */
static int append(Statement *self, unsigned int c, size_t r, const char **why) {
    Column *col = &self->cols[c];
    if (col->is_null) {
        col->nulls++;
        col->validity[r >> 3] &= (uint8_t) ~(1u << (r & 7));
        if (col->kind == 'i')
            ((int64_t *)col->values)[r] = 0;
        else if (col->kind == 'f')
            ((double *)col->values)[r] = 0;
        else
            ((int32_t *)col->values)[r + 1] = (int32_t)col->data_len;
        return 0;
    }
    col->validity[r >> 3] |= (uint8_t)(1u << (r & 7));
    if (col->kind == 'i') {
        ((int64_t *)col->values)[r] = col->scalar.i;
        return 0;
    }
    if (col->kind == 'f') {
        ((double *)col->values)[r] = col->scalar.d;
        return 0;
    }
    enum enum_field_types type = col->field.type;
    if (is_integer(type) || is_temporal(type)) {
        if (reserve(&col->data, &col->data_cap, col->data_len + 64))
            goto memory;
        char *out = col->data + col->data_len;
        col->data_len += is_integer(type) ? print_number(col, out) : print_temporal(col, out);
    } else {
        size_t length = col->length;
        if (reserve(&col->data, &col->data_cap, col->data_len + length))
            goto memory;
        if (length <= SMALL) {
            memcpy(col->data + col->data_len, col->small, length);
        } else { /* longer than the row's buffer: fetch it again, whole, into place */
            MYSQL_BIND whole;
            memset(&whole, 0, sizeof whole);
            whole.buffer_type = MYSQL_TYPE_STRING;
            whole.buffer = col->data + col->data_len;
            whole.buffer_length = length;
            if (mysql_stmt_fetch_column(self->stmt, &whole, c, 0)) {
                *why = NULL;
                return -1;
            }
        }
        col->data_len += length;
    }
    if (col->data_len > INT32_MAX) {
        *why = "a column of one fetch holds 2 GB or more";
        return -1;
    }
    ((int32_t *)col->values)[r + 1] = (int32_t)col->data_len;
    return 0;
memory:
    *why = "out of memory";
    return -1;
}

/* fetch(max_rows) -> list of columns for the next rows (none: the result has ended).
 * A column is (null_count, validity, values) for 'i' and 'f', (null_count, validity, offsets,
 * data) for 'b'; each buffer is bytes in Arrow's layout for that many rows. */
static PyObject *Statement_fetch(Statement *self, PyObject *arg) {
    Py_ssize_t max_rows = PyLong_AsSsize_t(arg);
    if (max_rows < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "max_rows must be >= 0");
        return NULL;
    }
    if (!self->stmt) {
        PyErr_SetString(PyExc_ValueError, "the statement is closed");
        return NULL;
    }
    if ((size_t)max_rows > self->rows_cap) {
        for (unsigned int c = 0; c < self->ncols; c++) {
            Column *col = &self->cols[c];
            size_t width = col->kind == 'b' ? sizeof(int32_t) : 8;
            free(col->validity);
            free(col->values);
            col->validity = malloc((size_t)max_rows / 8 + 1);
            col->values = malloc(((size_t)max_rows + 1) * width);
            if (!col->validity || !col->values) {
                self->rows_cap = 0;
                return PyErr_NoMemory();
            }
        }
        self->rows_cap = (size_t)max_rows;
    }
    for (unsigned int c = 0; c < self->ncols; c++) {
        Column *col = &self->cols[c];
        col->data_len = 0;
        col->nulls = 0;
        if (col->kind == 'b')
            ((int32_t *)col->values)[0] = 0;
    }
    size_t rows = 0;
    int rc = 0;
    const char *why = NULL;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    while (!self->done && rows < (size_t)max_rows) {
        rc = mysql_stmt_fetch(self->stmt);
        if (rc == MYSQL_NO_DATA) {
            self->done = 1;
            break;
        }
        if (rc == 1) {
            failed = 1;
            break;
        }
        for (unsigned int c = 0; c < self->ncols && !failed; c++) {
            Column *col = &self->cols[c];
            /* truncation of a string is expected (fetched again, whole); of a number it is not */
            if (col->error && (col->kind != 'b' || is_integer(col->field.type) || is_temporal(col->field.type))) {
                why = "a value does not fit the binding chosen for its column";
                failed = 1;
            } else if (append(self, c, rows, &why)) {
                failed = 1;
            }
        }
        if (failed)
            break;
        rows++;
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        if (why)
            return PyErr_Format(PyExc_RuntimeError, "binary read: %s", why);
        return raise_stmt_error(self->stmt);
    }
    PyObject *columns = PyList_New(0);
    if (!columns || rows == 0)
        return columns;
    for (unsigned int c = 0; c < self->ncols; c++) {
        Column *col = &self->cols[c];
        PyObject *item;
        Py_ssize_t validity = (Py_ssize_t)((rows + 7) / 8);
        if (col->kind == 'b')
            item = Py_BuildValue("(ny#y#y#)", col->nulls, col->validity, validity, col->values,
                                 (Py_ssize_t)((rows + 1) * sizeof(int32_t)), col->data ? col->data : "",
                                 (Py_ssize_t)col->data_len);
        else
            item = Py_BuildValue("(ny#y#)", col->nulls, col->validity, validity, col->values, (Py_ssize_t)(rows * 8));
        if (!item || PyList_Append(columns, item)) {
            Py_XDECREF(item);
            Py_DECREF(columns);
            return NULL;
        }
        Py_DECREF(item);
    }
    return columns;
}

static PyObject *Statement_kinds(Statement *self, void *closure) {
    PyObject *kinds = PyUnicode_New(self->ncols, 127);
    if (!kinds)
        return NULL;
    for (unsigned int c = 0; c < self->ncols; c++)
        PyUnicode_WRITE(PyUnicode_1BYTE_KIND, PyUnicode_DATA(kinds), c, self->cols[c].kind);
    return kinds;
}

static PyObject *Statement_close(Statement *self, PyObject *unused) {
    close_statement(self);
    Py_RETURN_NONE;
}

static PyMethodDef Statement_methods[] = {
    {"fetch", (PyCFunction)Statement_fetch, METH_O,
     "fetch(max_rows) -> the next rows as Arrow column buffers ([] at the end of the result)"},
    {"close", (PyCFunction)Statement_close, METH_NOARGS, "Close the statement on the server"},
    {NULL},
};

static PyGetSetDef Statement_getset[] = {
    {"kinds", (getter)Statement_kinds, NULL, "the kind of each column: 'i' int64, 'f' float64, 'b' bytes", NULL},
    {NULL},
};

static PyTypeObject StatementType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plex_etl.extract._binary.Statement",
    .tp_doc = "Statement(connection, sql, wants): a prepared SELECT executed on a mysqlclient connection",
    .tp_basicsize = sizeof(Statement),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Statement_init,
    .tp_dealloc = (destructor)Statement_dealloc,
    .tp_methods = Statement_methods,
    .tp_getset = Statement_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_binary", "The binary-protocol read (see _binary.c)", -1};

PyMODINIT_FUNC PyInit__binary(void) {
    if (PyType_Ready(&StatementType) < 0)
        return NULL;
    PyObject *exceptions = PyImport_ImportModule("MySQLdb._exceptions");
    if (!exceptions)
        return NULL;
    OperationalError = PyObject_GetAttrString(exceptions, "OperationalError");
    Py_DECREF(exceptions);
    if (!OperationalError)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&StatementType);
    if (PyModule_AddObject(m, "Statement", (PyObject *)&StatementType) < 0) {
        Py_DECREF(&StatementType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
