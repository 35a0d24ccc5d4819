/* lsan_keep_modules.c: preloaded into every test process of the sanitizer
 * build (tests/CMakeLists.txt). dlclose becomes a no-op, so the plugins
 * Open MPI and PMIx open at start-up stay mapped until exit, and
 * LeakSanitizer's fast unwinder names them in its reports; tests/lsan.supp
 * then matches their exit-time allocations by file name. Without it the
 * unloaded plugins' frames are "<unknown module>", which no suppression
 * matches, and only the slow unwinder (fast_unwind_on_malloc=0, about twice
 * the run time) reaches a frame of libmpi below them. */
int dlclose(void *handle);

int dlclose(void *handle) {
    (void)handle;
    return 0;
}
