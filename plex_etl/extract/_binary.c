/* The binary read: one prepared statement on the reader's own libmariadb connection,
 * its rows fetched into Arrow-layout column buffers with the GIL released.
 *
 * Why: the text protocol makes the server print every number, date and time (most of its
 * CPU per row) and the client parse them back; the binary protocol sends them as they are
 * stored. Why on the reader's own connection (mysqlclient's MYSQL*, taken from its
 * native-connection capsule by plex_etl/extract/native.py, the one user of that private API,
 * which also checks that this module and mysqlclient use the same client library): the
 * statement then runs inside the reader's consistent snapshot, FOUND_ROWS() after it counts
 * its rows, and the session's timeouts and the reader's KILL on stop apply to it unchanged
 * (plex_etl/extract/stream.py).
 *
 * The MYSQL* belongs to the mysqlclient connection: a Statement holds a reference to it (the
 * struct lives as long as the connection object does) and checks its public `open` member
 * before every call that touches the connection, because mysqlclient's close() frees the
 * connection's buffers and detaches this statement from it (a fetch then would read freed or
 * NULL memory). Closing the connection from another thread while a fetch runs is the
 * caller's to prevent, as for any mysqlclient connection (stream.py waits for its fetch
 * thread before closing).
 *
 * Each column comes out as one of these kinds, asked for by the caller and kept only where
 * the value is exactly the one the type map gives for the text protocol's text:
 *   'i'  int64 (an integer column of at most 63 bits of magnitude),
 *   'f'  float64 (DOUBLE, or FLOAT widened exactly),
 *   'n'  decimal128 of the asked scale (a DECIMAL column of that scale and at most the asked
 *        precision, its text parsed here; an integer column for scale 0),
 *   'd'  date32 (DATE), 't' timestamp in microseconds (DATETIME, TIMESTAMP: the session is
 *        UTC). A date that is no calendar date (zero date, zero month or day, year 0,
 *        2020-02-31) comes NULL here and, on the side, as its text with its row: the caller
 *        runs the type map on those texts, which counts them as it always did;
 *   'b'  bytes: the server's own text protocol bytes. Strings, BLOBs, DECIMAL, BIT, ENUM,
 *        SET, JSON travel as those bytes in the binary protocol too; integers, YEAR, DATE,
 *        DATETIME, TIMESTAMP and TIME travel as numbers and are printed here exactly as the
 *        server prints them (zero padding, zero dates, fractional digits of the column's
 *        precision, TIME beyond 24 h and negative). FLOAT and DOUBLE cannot be printed
 *        here as the server does: the caller has the server print them (CAST AS CHAR).
 * A column whose result type does not allow the asked kind exactly comes as 'b'.
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
    char *data;
    size_t len, cap;
} Bytes;

typedef struct {
    char kind;                  /* see above */
    size_t width;               /* bytes per row of `values`: 4 (date32, offsets), 8 or 16 */
    MYSQL_FIELD field;          /* type, flags, decimals, length of the result column */
    union { long long i; double d; MYSQL_TIME t; } scalar;
    char small[SMALL];
    my_bool is_null, error;
    unsigned long length;
    /* this fetch's column: validity bitmap, fixed-width values or int32 offsets, data */
    uint8_t *validity;
    char *values;
    Bytes text;
    Py_ssize_t nulls;
    /* 'd' and 't': the rows whose value is no calendar date (int32), and their texts */
    Bytes odd_rows, odd_offsets, odd_text;
} Column;

typedef struct {
    PyObject_HEAD
    PyObject *owner; /* the mysqlclient connection: the MYSQL* lives as long as it does */
    MYSQL *mysql;
    MYSQL_STMT *stmt;
    unsigned int ncols;
    Column *cols;
    MYSQL_BIND *binds;
    size_t rows_cap;
    int done;
    int busy; /* a fetch runs (GIL released): a second fetch or a close now would race it */
} Statement;

static PyObject *OperationalError; /* MySQLdb.OperationalError: errors read as mysqlclient's */

static PyObject *raise_stmt_error(MYSQL_STMT *stmt, MYSQL *mysql) {
    /* A lost connection during an unbuffered fetch is recorded on the connection only. */
    int use_stmt = mysql_stmt_errno(stmt) != 0;
    PyObject *args = Py_BuildValue("(is)", (int)(use_stmt ? mysql_stmt_errno(stmt) : mysql_errno(mysql)),
                                   use_stmt ? mysql_stmt_error(stmt) : mysql_error(mysql));
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

/* Room for `need` bytes; `data` exists afterwards even for 0 (memcpy's pointers must not be NULL). */
static int reserve(Bytes *b, size_t need) {
    if (need <= b->cap && b->data)
        return 0;
    size_t size = b->cap ? b->cap : 4096;
    while (size < need)
        size *= 2;
    char *grown = realloc(b->data, size);
    if (!grown)
        return -1;
    b->data = grown;
    b->cap = size;
    return 0;
}

static void free_columns(Statement *self) {
    if (self->cols) {
        for (unsigned int i = 0; i < self->ncols; i++) {
            Column *col = &self->cols[i];
            free(col->validity);
            free(col->values);
            free(col->text.data);
            free(col->odd_rows.data);
            free(col->odd_offsets.data);
            free(col->odd_text.data);
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

/* The kind a column is read as: the asked one where the result column's type gives exactly
 * the type map's value, else 'b' (its text, converted by the type map as before). */
static char choose_kind(const MYSQL_FIELD *f, char want, long precision, long scale) {
    int is_unsigned = (f->flags & UNSIGNED_FLAG) != 0;
    switch (want) {
    case 'i':
        if (is_integer(f->type) && f->type != MYSQL_TYPE_YEAR && !(f->type == MYSQL_TYPE_LONGLONG && is_unsigned))
            return 'i';
        break;
    case 'f':
        if (f->type == MYSQL_TYPE_DOUBLE || f->type == MYSQL_TYPE_FLOAT)
            return 'f';
        break;
    case 'n':
        if (precision > 38)
            break;
        if (is_integer(f->type) && f->type != MYSQL_TYPE_YEAR && scale == 0 && precision >= 20)
            return 'n'; /* every 64-bit integer has at most 20 digits */
        if (f->type == MYSQL_TYPE_NEWDECIMAL && (long)f->decimals == scale &&
            (long)f->length - (f->decimals > 0) - !is_unsigned <= precision)
            return 'n'; /* the column's DECIMAL(p, s): p digits at most, exactly s of them after the point */
        break;
    case 'd':
        if (f->type == MYSQL_TYPE_DATE)
            return 'd';
        break;
    case 't':
        if (f->type == MYSQL_TYPE_DATETIME || f->type == MYSQL_TYPE_TIMESTAMP)
            return 't';
        break;
    }
    return 'b';
}

/* Bind each result column by the kind chosen for it. Returns -1 with a Python error set. */
static int bind_columns(Statement *self, PyObject *wants) {
    MYSQL_RES *meta = mysql_stmt_result_metadata(self->stmt);
    if (!meta) {
        raise_stmt_error(self->stmt, self->mysql);
        return -1;
    }
    unsigned int ncols = mysql_num_fields(meta);
    if ((Py_ssize_t)ncols != PySequence_Fast_GET_SIZE(wants)) {
        mysql_free_result(meta);
        PyErr_Format(PyExc_ValueError, "the statement has %u columns, %zd kinds were given", ncols,
                     PySequence_Fast_GET_SIZE(wants));
        return -1;
    }
    self->cols = calloc(ncols, sizeof(Column));
    self->binds = calloc(ncols, sizeof(MYSQL_BIND));
    if (!self->cols || !self->binds) {
        mysql_free_result(meta);
        PyErr_NoMemory();
        return -1;
    }
    self->ncols = ncols; /* only once its columns exist: the kinds getter and free_columns walk them */
    MYSQL_FIELD *fields = mysql_fetch_fields(meta);
    for (unsigned int i = 0; i < self->ncols; i++) {
        Column *col = &self->cols[i];
        MYSQL_BIND *bind = &self->binds[i];
        const char *want;
        long precision, scale;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(wants, i), "sll", &want, &precision, &scale)) {
            mysql_free_result(meta);
            return -1;
        }
        col->field = fields[i];
        /* the names and other strings belong to `meta`, freed below: only numbers are kept */
        col->field.name = col->field.org_name = col->field.table = col->field.org_table = NULL;
        col->field.db = col->field.catalog = col->field.def = NULL;
        enum enum_field_types type = col->field.type;
        col->kind = choose_kind(&col->field, want[0], precision, scale);
        if (col->kind == 'b' && (type == MYSQL_TYPE_DOUBLE || type == MYSQL_TYPE_FLOAT)) {
            mysql_free_result(meta);
            PyErr_Format(PyExc_ValueError, "column %u: a FLOAT or DOUBLE is read as float64 or printed by the server", i);
            return -1;
        }
        col->width = col->kind == 'n' ? 16 : (col->kind == 'b' || col->kind == 'd') ? 4 : 8;
        bind->is_null = &col->is_null;
        bind->error = &col->error;
        bind->length = &col->length;
        if (col->kind == 'f') {
            bind->buffer_type = MYSQL_TYPE_DOUBLE;
            bind->buffer = &col->scalar.d;
        } else if (is_integer(type)) {
            bind->buffer_type = MYSQL_TYPE_LONGLONG;
            bind->buffer = &col->scalar.i;
            bind->is_unsigned = (col->field.flags & UNSIGNED_FLAG) != 0;
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
        raise_stmt_error(self->stmt, self->mysql);
        return -1;
    }
    return 0;
}

/* 1 while the owner connection is open, 0 once closed (ValueError set), -1 on error. */
static int owner_open(Statement *self) {
    PyObject *open = PyObject_GetAttrString(self->owner, "open"); /* mysqlclient's member, 0 after close() */
    if (!open)
        return -1;
    int is_open = PyObject_IsTrue(open);
    Py_DECREF(open);
    if (is_open == 0)
        PyErr_SetString(PyExc_ValueError, "the statement's connection is closed");
    return is_open;
}

static int Statement_init(Statement *self, PyObject *args, PyObject *kwds) {
    PyObject *owner, *capsule, *kinds;
    const char *sql;
    Py_ssize_t sql_len;
    if (!PyArg_ParseTuple(args, "OOs#O", &owner, &capsule, &sql, &sql_len, &kinds))
        return -1;
    if (self->owner) { /* a second __init__ would replace the statement under a running fetch */
        PyErr_SetString(PyExc_RuntimeError, "the statement is initialized already");
        return -1;
    }
    MYSQL *mysql = PyCapsule_GetPointer(capsule, "_mysql.connection.native_connection");
    if (!mysql)
        return -1;
    Py_INCREF(owner);
    self->owner = owner;
    self->mysql = mysql;
    if (owner_open(self) != 1)
        return -1;
    PyObject *wants = PySequence_Fast(kinds, "kinds must be a sequence of (kind, precision, scale)");
    if (!wants)
        return -1;
    self->stmt = mysql_stmt_init(mysql);
    if (!self->stmt) {
        Py_DECREF(wants);
        PyErr_NoMemory();
        return -1;
    }
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = mysql_stmt_prepare(self->stmt, sql, (unsigned long)sql_len);
    Py_END_ALLOW_THREADS
    if (failed) {
        Py_DECREF(wants);
        raise_stmt_error(self->stmt, self->mysql);
        return -1;
    }
    failed = bind_columns(self, wants);
    Py_DECREF(wants);
    if (failed)
        return -1;
    Py_BEGIN_ALLOW_THREADS
    failed = mysql_stmt_execute(self->stmt); /* unbuffered: rows are read by fetch */
    Py_END_ALLOW_THREADS
    if (failed) {
        raise_stmt_error(self->stmt, self->mysql);
        return -1;
    }
    return 0;
}

/* Text as the server prints it; sprintf costs several times more per value. */
static char *put_digits(char *out, unsigned long long v, int width) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (; width > n; width--) /* zero padding: up to a ZEROFILL column's display width (255) */
        *out++ = '0';
    while (n)
        *out++ = tmp[--n];
    return out;
}

static size_t print_number(const Column *col, char *out) {
    const MYSQL_FIELD *f = &col->field;
    /* ZEROFILL columns (and YEAR) are printed to their display width */
    int width = (f->flags & ZEROFILL_FLAG) ? (int)f->length : 0;
    char *end = out;
    unsigned long long magnitude = (unsigned long long)col->scalar.i;
    if (!(f->flags & UNSIGNED_FLAG) && col->scalar.i < 0) {
        *end++ = '-';
        magnitude = 0 - magnitude;
        width = width ? width - 1 : 0;
    }
    return (size_t)(put_digits(end, magnitude, width) - out);
}

static size_t print_temporal(const Column *col, char *out) {
    const MYSQL_TIME *t = &col->scalar.t;
    unsigned int decimals = col->field.decimals;
    char *end = out;
    if (col->field.type == MYSQL_TYPE_TIME) {
        if (t->neg)
            *end++ = '-';
        end = put_digits(end, t->hour, 2);
    } else {
        end = put_digits(end, t->year, 4);
        *end++ = '-';
        end = put_digits(end, t->month, 2);
        *end++ = '-';
        end = put_digits(end, t->day, 2);
        if (col->field.type == MYSQL_TYPE_DATE)
            return (size_t)(end - out);
        *end++ = ' ';
        end = put_digits(end, t->hour, 2);
    }
    *end++ = ':';
    end = put_digits(end, t->minute, 2);
    *end++ = ':';
    end = put_digits(end, t->second, 2);
    if (decimals > 0 && decimals <= 6) { /* the column's fractional digits, always all of them */
        unsigned long part = t->second_part;
        for (unsigned int d = decimals; d < 6; d++)
            part /= 10;
        *end++ = '.';
        end = put_digits(end, part, (int)decimals);
    } else if (decimals > 6 && t->second_part) { /* an expression of unknown precision */
        *end++ = '.';
        end = put_digits(end, t->second_part, 6);
    }
    return (size_t)(end - out);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int is_calendar_date(const MYSQL_TIME *t) {
    static const unsigned days[] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (t->year == 0 || t->month == 0 || t->month > 12 || t->day == 0)
        return 0;
    int leap = (t->year % 4 == 0 && t->year % 100 != 0) || t->year % 400 == 0;
    return t->day <= days[t->month] + (t->month == 2 && leap);
}

/* A DECIMAL's text (sign, digits, point, exactly `decimals` digits) as its unscaled value. */
static int parse_decimal(const char *text, size_t length, unsigned int decimals, __int128 *out) {
    __int128 value = 0;
    size_t i = 0, after = 0;
    int negative = 0, point = 0;
    if (i < length && text[i] == '-') {
        negative = 1;
        i++;
    }
    if (i == length)
        return -1;
    for (; i < length; i++) {
        char c = text[i];
        if (c == '.' && !point) {
            point = 1;
        } else if (c >= '0' && c <= '9') {
            value = value * 10 + (c - '0');
            after += point;
        } else {
            return -1;
        }
    }
    if (after != decimals)
        return -1;
    *out = negative ? -value : value;
    return 0;
}

/* Append the current row's value of column `c` at row `r`: 0, or -1 (error: message in *why,
 * or NULL for the statement's own error). */
static int append(Statement *self, unsigned int c, size_t r, const char **why) {
    Column *col = &self->cols[c];
    char *slot = col->values + r * col->width;
    if (col->is_null) {
        col->nulls++;
        col->validity[r >> 3] &= (uint8_t) ~(1u << (r & 7));
        if (col->kind == 'b')
            ((int32_t *)col->values)[r + 1] = (int32_t)col->text.len;
        else
            memset(slot, 0, col->width);
        return 0;
    }
    col->validity[r >> 3] |= (uint8_t)(1u << (r & 7));
    enum enum_field_types type = col->field.type;
    switch (col->kind) {
    case 'i':
        *(int64_t *)slot = col->scalar.i;
        return 0;
    case 'f':
        *(double *)slot = col->scalar.d;
        return 0;
    case 'n': {
        __int128 value;
        if (is_integer(type))
            value = (col->field.flags & UNSIGNED_FLAG) ? (__int128)(unsigned long long)col->scalar.i
                                                        : (__int128)col->scalar.i;
        else if (col->length > SMALL || parse_decimal(col->small, col->length, col->field.decimals, &value)) {
            *why = "a DECIMAL value whose text is not of its column's scale";
            return -1;
        }
        memcpy(slot, &value, 16); /* Arrow's decimal128: 16 bytes, two's complement, little-endian */
        return 0;
    }
    case 'd':
    case 't': {
        const MYSQL_TIME *t = &col->scalar.t;
        if (!is_calendar_date(t)) { /* NULL here; its text goes to the type map */
            col->nulls++;
            col->validity[r >> 3] &= (uint8_t) ~(1u << (r & 7));
            memset(slot, 0, col->width);
            if (reserve(&col->odd_rows, col->odd_rows.len + 4) ||
                reserve(&col->odd_offsets, col->odd_offsets.len + 8) || reserve(&col->odd_text, col->odd_text.len + 64))
                goto memory;
            if (col->odd_offsets.len == 0) {
                *(int32_t *)col->odd_offsets.data = 0;
                col->odd_offsets.len = 4;
            }
            *(int32_t *)(col->odd_rows.data + col->odd_rows.len) = (int32_t)r;
            col->odd_rows.len += 4;
            col->odd_text.len += print_temporal(col, col->odd_text.data + col->odd_text.len);
            *(int32_t *)(col->odd_offsets.data + col->odd_offsets.len) = (int32_t)col->odd_text.len;
            col->odd_offsets.len += 4;
            return 0;
        }
        int64_t days = days_from_civil(t->year, t->month, t->day);
        if (col->kind == 'd')
            *(int32_t *)slot = (int32_t)days;
        else
            *(int64_t *)slot = ((days * 24 + t->hour) * 60 + t->minute) * 60 * 1000000LL +
                               (int64_t)t->second * 1000000LL + (int64_t)t->second_part;
        return 0;
    }
    }
    /* 'b' */
    if (is_integer(type) || is_temporal(type)) {
        if (reserve(&col->text, col->text.len + 64 + col->field.length))
            goto memory;
        char *out = col->text.data + col->text.len;
        col->text.len += is_integer(type) ? print_number(col, out) : print_temporal(col, out);
    } else {
        size_t length = col->length;
        if (reserve(&col->text, col->text.len + length))
            goto memory;
        if (length <= SMALL) {
            memcpy(col->text.data + col->text.len, col->small, length);
        } else { /* longer than the row's buffer: fetch it again, whole, into place */
            MYSQL_BIND whole;
            memset(&whole, 0, sizeof whole);
            whole.buffer_type = MYSQL_TYPE_STRING;
            whole.buffer = col->text.data + col->text.len;
            whole.buffer_length = length;
            if (mysql_stmt_fetch_column(self->stmt, &whole, c, 0)) {
                *why = NULL;
                return -1;
            }
        }
        col->text.len += length;
    }
    if (col->text.len > INT32_MAX) {
        *why = "a column of one fetch holds 2 GB or more";
        return -1;
    }
    ((int32_t *)col->values)[r + 1] = (int32_t)col->text.len;
    return 0;
memory:
    *why = "out of memory";
    return -1;
}

static PyObject *as_bytes(const Bytes *b) {
    return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
}

/* Whether a call may use the statement now (else a Python error is set). */
static int usable(Statement *self) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the statement is being fetched by another thread");
        return 0;
    }
    if (!self->stmt) {
        PyErr_SetString(PyExc_ValueError, "the statement is closed");
        return 0;
    }
    return owner_open(self) == 1;
}

/* fetch(max_rows) -> (rows, columns) for the next rows, (0, []) once the result has ended.
 * A column is (null_count, validity, values, text, odd): buffers in Arrow's layout for that
 * many rows: `values` fixed-width, or int32 offsets into `text` for 'b' (text None
 * otherwise); `odd` None, or for 'd'/'t' (rows, offsets, text) of the values that are no
 * calendar date. */
static PyObject *Statement_fetch(Statement *self, PyObject *arg) {
    Py_ssize_t max_rows = PyLong_AsSsize_t(arg);
    if (max_rows < 1) { /* the column buffers are sized by the first fetch: none exist for 0 rows */
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "max_rows must be >= 1");
        return NULL;
    }
    if (!usable(self))
        return NULL;
    if ((size_t)max_rows > self->rows_cap) {
        for (unsigned int c = 0; c < self->ncols; c++) {
            Column *col = &self->cols[c];
            free(col->validity);
            free(col->values);
            col->validity = malloc((size_t)max_rows / 8 + 1);
            col->values = malloc(((size_t)max_rows + 1) * col->width);
            if (!col->validity || !col->values) {
                self->rows_cap = 0;
                return PyErr_NoMemory();
            }
        }
        self->rows_cap = (size_t)max_rows;
    }
    for (unsigned int c = 0; c < self->ncols; c++) {
        Column *col = &self->cols[c];
        col->text.len = col->odd_rows.len = col->odd_offsets.len = col->odd_text.len = 0;
        col->nulls = 0;
        if (col->kind == 'b')
            ((int32_t *)col->values)[0] = 0;
    }
    size_t rows = 0;
    const char *why = NULL;
    int failed = 0;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    while (!self->done && rows < (size_t)max_rows) {
        int rc = mysql_stmt_fetch(self->stmt);
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
            if (col->error && (is_integer(col->field.type) || is_temporal(col->field.type) ||
                               col->field.type == MYSQL_TYPE_DOUBLE || col->field.type == MYSQL_TYPE_FLOAT)) {
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
    self->busy = 0;
    if (failed) {
        if (why)
            return PyErr_Format(PyExc_RuntimeError, "binary read: %s", why);
        return raise_stmt_error(self->stmt, self->mysql);
    }
    PyObject *columns = PyList_New(rows ? self->ncols : 0);
    for (unsigned int c = 0; columns && rows && c < self->ncols; c++) {
        Column *col = &self->cols[c];
        PyObject *odd = Py_None, *text = Py_None, *item = NULL;
        Py_INCREF(Py_None);
        Py_INCREF(Py_None);
        if (col->odd_rows.len) {
            Py_DECREF(odd);
            odd = Py_BuildValue("(NNN)", as_bytes(&col->odd_rows), as_bytes(&col->odd_offsets), as_bytes(&col->odd_text));
        }
        if (col->kind == 'b') {
            Py_DECREF(text);
            text = as_bytes(&col->text);
        }
        if (odd && text)
            item = Py_BuildValue("(ny#y#NN)", col->nulls, (const char *)col->validity, (Py_ssize_t)((rows + 7) / 8),
                                 col->values, (Py_ssize_t)((rows + (col->kind == 'b')) * col->width), text, odd);
        else {
            Py_XDECREF(odd);
            Py_XDECREF(text);
        }
        if (!item) {
            Py_DECREF(columns);
            return NULL;
        }
        PyList_SET_ITEM(columns, c, item);
    }
    return columns ? Py_BuildValue("(nN)", (Py_ssize_t)rows, columns) : NULL;
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
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the statement is being fetched by another thread");
        return NULL;
    }
    /* After the connection's close() the statement is detached from it: this frees it locally. */
    close_statement(self);
    Py_RETURN_NONE;
}

static PyObject *client_info(PyObject *module, PyObject *unused) {
    return PyUnicode_FromString(mysql_get_client_info());
}

static PyMethodDef module_methods[] = {
    {"client_info", client_info, METH_NOARGS,
     "client_info() -> the version of the client library this module is linked with (mysql_get_client_info)"},
    {NULL},
};

static PyMethodDef Statement_methods[] = {
    {"fetch", (PyCFunction)Statement_fetch, METH_O,
     "fetch(max_rows) -> (rows, columns): the next rows as Arrow column buffers ((0, []) at the end)"},
    {"close", (PyCFunction)Statement_close, METH_NOARGS, "Close the statement on the server"},
    {NULL},
};

static PyGetSetDef Statement_getset[] = {
    {"kinds", (getter)Statement_kinds, NULL, "the kind each column is read as (see _binary.c)", NULL},
    {NULL},
};

static PyTypeObject StatementType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plex_etl.extract._binary.Statement",
    .tp_doc = "Statement(connection, native, sql, kinds): a prepared SELECT executed on a mysqlclient connection "
              "(native: its native-connection capsule, see plex_etl/extract/native.py); "
              "kinds: one (kind, precision, scale) per column",
    .tp_basicsize = sizeof(Statement),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Statement_init,
    .tp_dealloc = (destructor)Statement_dealloc,
    .tp_methods = Statement_methods,
    .tp_getset = Statement_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_binary", "The binary-protocol read (see _binary.c)", -1,
                                     module_methods};

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
