/* io_heap.h: a binary heap over an array, written once for the merge
 * candidates of both BPE encoders (io_tokenizer.c, io_hftok_enc.c). The
 * includer defines HEAP_T (the element type), HEAP_BEFORE (a function
 * taking two const HEAP_T *: 1 when the first comes out before the
 * second), HEAP_PUSH and HEAP_POP (the functions' names). Not a header of
 * its own: no guard. */

/* Adds c to the heap h of *n elements (room for one more is the caller's). */
static void HEAP_PUSH(HEAP_T *h, int64_t *n, HEAP_T c) {
    int64_t i = (*n)++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!HEAP_BEFORE(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

/* Removes and returns the first element (*n > 0). */
static HEAP_T HEAP_POP(HEAP_T *h, int64_t *n) {
    HEAP_T top = h[0], last = h[--(*n)];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && HEAP_BEFORE(&h[c + 1], &h[c]))
            c++;
        if (!HEAP_BEFORE(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}
