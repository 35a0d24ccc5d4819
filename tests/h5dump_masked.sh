# h5dump_masked.sh (sourced): masked_h5dump FILE prints h5dump of an
# mpquant checkpoint with the fields that legitimately differ between runs
# (provenance date and nranks, stage_times) masked, one MASKED line each.
masked_h5dump() {
    h5dump "$1" | awk '
        NR == 1 { print "HDF5 FILE {"; next }
        /ATTRIBUTE "date"|ATTRIBUTE "nranks"|DATASET "stage_times"/ { skip = 1; print "MASKED"; next }
        skip && /\(0\):/ { skip = 0; next }
        !skip { print }'
}
