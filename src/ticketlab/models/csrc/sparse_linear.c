/* Kernels for a Linear layer under an unstructured mask, its kept weights in CSR (models/sparse_linear.py),
   for a chain of such layers with ReLUs between (models/sparse_chain.py), and Adam's step over them.

   Every matrix of activations or gradients is held transposed, features x batch, with the batch
   padded to `ld`, a multiple of 8 (zeros beyond the batch): a row of the batch is then whole
   vectors of 8 floats, and each kept weight costs a few vector operations whatever the batch.
   Plain C with GCC/Clang vector extensions (8 floats; AVX on x86, two NEON registers on ARM),
   built by models/native.py for the machine it runs on. One thread; the same inputs give the same
   bits on the same machine. */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4))); /* the same, at any float's address */
#define LOAD(p) (*(const v8u *)(p))
#define STORE(p, v) (*(v8u *)(p) = (v))
#define MAX_VECTORS 8 /* accumulators a row of the forward product holds in registers: 64 columns */
#define TILE 16

#if defined(__clang__) || __GNUC__ >= 12
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
/* out rows 0..7 (stride ld) = the 8 x 8 block of a at rows 0..rows-1 (stride sn; zeros past rows), transposed */
static void transpose_block(const float *restrict a, int64_t sn, int64_t rows, float *restrict out, int64_t ld) {
    v8 r[8];
    for (int q = 0; q < 8; q++) r[q] = q < rows ? LOAD(a + q * sn) : (v8){0};
    v8 t[8], u[8];
    for (int q = 0; q < 8; q += 2) {
        t[q] = SHUFFLE(r[q], r[q + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[q + 1] = SHUFFLE(r[q], r[q + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int q = 0; q < 8; q += 4) {
        u[q] = SHUFFLE(t[q], t[q + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        u[q + 1] = SHUFFLE(t[q], t[q + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        u[q + 2] = SHUFFLE(t[q + 1], t[q + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        u[q + 3] = SHUFFLE(t[q + 1], t[q + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int p = 0; p < 4; p++) {
        STORE(out + p * ld, SHUFFLE(u[p], u[p + 4], 0, 1, 2, 3, 8, 9, 10, 11));
        STORE(out + (p + 4) * ld, SHUFFLE(u[p], u[p + 4], 4, 5, 6, 7, 12, 13, 14, 15));
    }
}
#endif

/* out (m x ld) = a transposed, a (n x m) with strides (sn, sm); columns n..ld of out are zeroed. */
void transpose_pad(int64_t n, int64_t m, const float *restrict a, int64_t sn, int64_t sm,
                   float *restrict out, int64_t ld) {
    int64_t i0 = 0;
#ifdef SHUFFLE
    if (sm == 1) { /* rows of a contiguous (a batch of data, or an activation): 8 x 8 blocks in registers */
        for (; i0 + 8 <= m; i0 += 8)
            for (int64_t j = 0; j < ld; j += 8)
                transpose_block(a + j * sn + i0, sn, n - j < 8 ? n - j : 8, out + i0 * ld + j, ld);
    }
#endif
    const int64_t blocked = i0; /* rows of out written whole, padding included */
    for (; i0 < m; i0 += TILE) /* any strides, and the features past the last whole block */
        for (int64_t j0 = 0; j0 < n; j0 += TILE) {
            const int64_t i1 = i0 + TILE < m ? i0 + TILE : m, j1 = j0 + TILE < n ? j0 + TILE : n;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++) out[i * ld + j] = a[j * sn + i * sm];
        }
    if (ld > n)
        for (int64_t i = blocked; i < m; i++) memset(out + i * ld + n, 0, sizeof(float) * (size_t)(ld - n));
}

/* One row's product over `vectors` vectors of columns, accumulated in registers. */
static inline __attribute__((always_inline)) void row_product(
        int vectors, int32_t lo, int32_t hi, const int32_t *restrict col, const float *restrict values,
        float start, const float *restrict x, int64_t ld, float *restrict y) {
    v8 acc[MAX_VECTORS];
    for (int i = 0; i < vectors; i++) acc[i] = (v8){0} + start;
    for (int32_t k = lo; k < hi; k++) {
        const float v = values[k];
        const float *xk = x + (int64_t)col[k] * ld;
        for (int i = 0; i < vectors; i++) acc[i] += v * LOAD(xk + 8 * i);
    }
    for (int i = 0; i < vectors; i++) STORE(y + 8 * i, acc[i]);
}

/* One vector of columns (a batch of at most 8): four accumulators over alternate kept weights,
   so that additions need not wait on each other. */
static void row_product_narrow(int32_t lo, int32_t hi, const int32_t *restrict col, const float *restrict values,
                               float start, const float *restrict x, int64_t ld, float *restrict y) {
    v8 a0 = (v8){0} + start, a1 = {0}, a2 = {0}, a3 = {0};
    int32_t k = lo;
    for (; k + 4 <= hi; k += 4) {
        a0 += values[k] * LOAD(x + (int64_t)col[k] * ld);
        a1 += values[k + 1] * LOAD(x + (int64_t)col[k + 1] * ld);
        a2 += values[k + 2] * LOAD(x + (int64_t)col[k + 2] * ld);
        a3 += values[k + 3] * LOAD(x + (int64_t)col[k + 3] * ld);
    }
    for (; k < hi; k++) a0 += values[k] * LOAD(x + (int64_t)col[k] * ld);
    STORE(y, (a0 + a1) + (a2 + a3));
}

/* y (rows x ld) = bias + W x, W the CSR matrix (crow, col, values), x (cols x ld); bias may be NULL. */
void csr_forward(int64_t rows, int64_t ld, const int32_t *restrict crow, const int32_t *restrict col,
                 const float *restrict values, const float *restrict bias, const float *restrict x,
                 float *restrict y) {
    for (int64_t r = 0; r < rows; r++) {
        const float start = bias ? bias[r] : 0.0f;
        const int32_t lo = crow[r], hi = crow[r + 1];
        float *yr = y + r * ld;
        int64_t j = 0;
        for (; j + 8 * MAX_VECTORS <= ld; j += 8 * MAX_VECTORS)
            row_product(MAX_VECTORS, lo, hi, col, values, start, x + j, ld, yr + j);
        /* the rest: a constant vector count in each case, so that the accumulators stay in registers */
        switch ((ld - j) / 8) {
            case 1: row_product_narrow(lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 2: row_product(2, lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 3: row_product(3, lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 4: row_product(4, lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 5: row_product(5, lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 6: row_product(6, lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 7: row_product(7, lo, hi, col, values, start, x + j, ld, yr + j); break;
            default: break;
        }
    }
}

static inline __attribute__((always_inline)) float sum8(v8 a) {
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

/* One row's kept entries of the weight gradient over `vectors` vectors of columns: the row of g
   held in registers, each kept entry a dot product with its input row. */
static inline __attribute__((always_inline)) void row_dots(
        int vectors, int32_t lo, int32_t hi, const int32_t *restrict col, const float *restrict gr,
        const float *restrict x, int64_t ld, float *restrict grad_values) {
    v8 g[MAX_VECTORS];
    for (int i = 0; i < vectors; i++) g[i] = LOAD(gr + 8 * i);
    for (int32_t k = lo; k < hi; k++) {
        const float *xk = x + (int64_t)col[k] * ld;
        v8 a0 = g[0] * LOAD(xk), a1 = {0};
        for (int i = 1; i < vectors; i++) {
            if (i % 2) a1 += g[i] * LOAD(xk + 8 * i);
            else a0 += g[i] * LOAD(xk + 8 * i);
        }
        grad_values[k] = sum8(a0 + a1);
    }
}

/* grad_values[k] = <g row r, x row col[k]> for each kept entry k of row r: the weight gradient
   (g x^T) at the kept entries only. g (rows x ld), x (cols x ld). */
void csr_weight_grad(int64_t rows, int64_t ld, const int32_t *restrict crow, const int32_t *restrict col,
                     const float *restrict g, const float *restrict x, float *restrict grad_values) {
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * ld;
        const int32_t lo = crow[r], hi = crow[r + 1];
        switch (ld / 8) { /* a batch of up to 64: the row of g in registers */
            case 0: break;
            case 1: row_dots(1, lo, hi, col, gr, x, ld, grad_values); break;
            case 2: row_dots(2, lo, hi, col, gr, x, ld, grad_values); break;
            case 3: row_dots(3, lo, hi, col, gr, x, ld, grad_values); break;
            case 4: row_dots(4, lo, hi, col, gr, x, ld, grad_values); break;
            case 5: row_dots(5, lo, hi, col, gr, x, ld, grad_values); break;
            case 6: row_dots(6, lo, hi, col, gr, x, ld, grad_values); break;
            case 7: row_dots(7, lo, hi, col, gr, x, ld, grad_values); break;
            case 8: row_dots(8, lo, hi, col, gr, x, ld, grad_values); break;
            default:
                for (int32_t k = lo; k < hi; k++) {
                    const float *xk = x + (int64_t)col[k] * ld;
                    v8 a0 = {0}, a1 = {0};
                    int64_t j = 0;
                    for (; j + 16 <= ld; j += 16) {
                        a0 += LOAD(gr + j) * LOAD(xk + j);
                        a1 += LOAD(gr + j + 8) * LOAD(xk + j + 8);
                    }
                    if (j < ld) a0 += LOAD(gr + j) * LOAD(xk + j);
                    grad_values[k] = sum8(a0 + a1);
                }
        }
    }
}

/* gx (cols x ld) = W^T g, g (rows x ld): the input gradient. */
void csr_input_grad(int64_t rows, int64_t cols, int64_t ld, const int32_t *restrict crow,
                    const int32_t *restrict col, const float *restrict values, const float *restrict g,
                    float *restrict gx) {
    memset(gx, 0, sizeof(float) * (size_t)(cols * ld));
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * ld;
        for (int32_t k = crow[r]; k < crow[r + 1]; k++) {
            const float v = values[k];
            float *o = gx + (int64_t)col[k] * ld;
            for (int64_t j = 0; j < ld; j += 8) STORE(o + j, LOAD(o + j) + v * LOAD(gr + j));
        }
    }
}

/* grad_bias[r] = sum over the batch of g row r (padding is zero). */
void row_sums(int64_t rows, int64_t ld, const float *restrict g, float *restrict out) {
    for (int64_t r = 0; r < rows; r++) {
        v8 acc = {0};
        for (int64_t j = 0; j < ld; j += 8) acc += LOAD(g + r * ld + j);
        out[r] = sum8(acc);
    }
}

/* y (rows x ld) = max(y, 0) in place over the first n columns, zeros past them: a hidden layer's
   activation in a chain (models/sparse_chain.py), its padding kept zero for the next layer. */
void relu_pad(int64_t rows, int64_t n, int64_t ld, float *restrict y) {
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * ld;
        for (int64_t j = 0; j < n; j++) yr[j] = yr[j] > 0.0f ? yr[j] : 0.0f;
        for (int64_t j = n; j < ld; j++) yr[j] = 0.0f;
    }
}

/* g = g where y > 0, else 0, in place: the gradient through that activation (y its output). */
void relu_grad(int64_t count, const float *restrict y, float *restrict g) {
    for (int64_t i = 0; i < count; i++) g[i] = y[i] > 0.0f ? g[i] : 0.0f;
}

/* A Linear layer of a chain: its kept weights in CSR (a dense layer: the CSR of every entry, its
   weight row-major), and where backward writes its gradients (NULL: not asked for). Eight 64-bit
   words, as models/native.py packs them. */
typedef struct {
    int64_t rows, cols;
    const int32_t *crow, *col;
    const float *weight, *bias;
    float *grad_weight, *grad_bias;
} layer_t;

/* out (n x m, row-major) = the first n columns of a (m x ld), transposed. */
static void unpad(int64_t m, int64_t n, const float *restrict a, int64_t ld, float *restrict out) {
    for (int64_t i0 = 0; i0 < m; i0 += TILE)
        for (int64_t j0 = 0; j0 < n; j0 += TILE) {
            const int64_t i1 = i0 + TILE < m ? i0 + TILE : m, j1 = j0 + TILE < n ? j0 + TILE : n;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0; i < i1; i++) out[j * m + i] = a[i * ld + j];
        }
}

/* relu(...relu(x W1^T + b1)...) Wn^T + bn for x (batch x layers[0].cols, strides sx0, sx1) into
   out (batch x layers[count-1].rows). `work` (ld x (cols of the first + rows of every layer)
   floats) keeps each layer's input in the padded layout, for chain_backward: x transposed, then
   each hidden activation. */
void chain_forward(int64_t count, const layer_t *layers, int64_t batch, int64_t ld, const float *x,
                   int64_t sx0, int64_t sx1, float *work, float *out) {
    transpose_pad(batch, layers[0].cols, x, sx0, sx1, work, ld);
    float *h = work;
    for (int64_t i = 0; i < count; i++) {
        const layer_t *l = layers + i;
        float *y = h + l->cols * ld;
        csr_forward(l->rows, ld, l->crow, l->col, l->weight, l->bias, h, y);
        if (i < count - 1) relu_pad(l->rows, batch, ld, y);
        h = y;
    }
    unpad(layers[count - 1].rows, batch, h, ld, out);
}

/* The chain's backward from the gradient of its output (batch x rows of the last, strides sg0,
   sg1): each layer's gradients where asked for, and the input's into grad_x (batch x cols of the
   first) unless NULL. `work` as chain_forward left it; `scratch` 2 x widest x ld floats, widest
   the most rows or columns of any layer. */
void chain_backward(int64_t count, const layer_t *layers, int64_t batch, int64_t ld, const float *work,
                    const float *grad_out, int64_t sg0, int64_t sg1, float *scratch, int64_t widest,
                    float *grad_x) {
    float *g = scratch, *spare = scratch + widest * ld;
    const float *h = work;
    for (int64_t i = 0; i < count - 1; i++) h += layers[i].cols * ld; /* the last layer's input */
    transpose_pad(batch, layers[count - 1].rows, grad_out, sg0, sg1, g, ld);
    for (int64_t i = count - 1; i >= 0; i--) {
        const layer_t *l = layers + i;
        if (l->grad_bias) row_sums(l->rows, ld, g, l->grad_bias);
        if (l->grad_weight) csr_weight_grad(l->rows, ld, l->crow, l->col, g, h, l->grad_weight);
        if (i == 0 && !grad_x) return;
        csr_input_grad(l->rows, l->cols, ld, l->crow, l->col, l->weight, g, spare);
        if (i > 0) {
            relu_grad(l->cols * ld, h, spare); /* h: the previous layer's activation */
            h -= layers[i - 1].cols * ld;
        }
        float *t = g; g = spare; spare = t;
    }
    unpad(layers[0].cols, batch, g, ld, grad_x);
}

/* One step of Adam over n parameters, as torch.optim.Adam takes it (weight decay added to the
   gradient, no amsgrad), in float: the kept weights of a sparse layer, or any parameter of a
   model that has one (training/optim.py). *step counts the steps taken, a float as in PyTorch's
   fused Adam, so that the state is the same either way. */
void adam_step(int64_t n, float *restrict param, const float *restrict grad, float *restrict exp_avg,
               float *restrict exp_avg_sq, float *restrict step, double lr, double beta1, double beta2,
               double eps, double weight_decay) {
    const float t = *step + 1.0f;
    *step = t;
    const float step_size = (float)(lr / (1.0 - pow(beta1, t))), root = (float)sqrt(1.0 - pow(beta2, t));
    const float b1 = (float)beta1, b2 = (float)beta2, e = (float)eps, decay = (float)weight_decay;
    const float c1 = (float)(1.0 - beta1), c2 = (float)(1.0 - beta2);
    for (int64_t i = 0; i < n; i++) {
        const float g = grad[i] + decay * param[i];
        const float m = exp_avg[i] * b1 + g * c1, v = exp_avg_sq[i] * b2 + c2 * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] -= step_size * m / (sqrtf(v) / root + e);
    }
}
