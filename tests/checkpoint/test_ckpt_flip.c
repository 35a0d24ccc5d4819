/* test_ckpt_flip.c: damages one bit of a checkpoint's dataset the way a bad
 * disk or a bad copy would, below HDF5 (the file's metadata stay valid):
 *   test_ckpt_flip FILE DATASET BYTE BIT
 * finds the file offset of the contiguous DATASET with the HDF5 API
 * (H5Dget_offset), then flips bit BIT (0-7) of its byte BYTE in place.
 * Prints the offset changed. Exit status 0 on success, 1 on error. */
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s FILE DATASET BYTE BIT\n", argv[0]);
        return 1;
    }
    const long long byte = atoll(argv[3]);
    const int bit = atoi(argv[4]);
    if (byte < 0 || bit < 0 || bit > 7) {
        fprintf(stderr, "test_ckpt_flip: bad byte %lld or bit %d\n", byte, bit);
        return 1;
    }
    hid_t f = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, argv[2], H5P_DEFAULT) : H5I_INVALID_HID;
    haddr_t off = d >= 0 ? H5Dget_offset(d) : HADDR_UNDEF;
    hsize_t size = d >= 0 ? H5Dget_storage_size(d) : 0;
    if (d >= 0)
        H5Dclose(d);
    if (f >= 0)
        H5Fclose(f);
    if (off == HADDR_UNDEF || (hsize_t)byte >= size) {
        fprintf(stderr, "test_ckpt_flip: %s: no contiguous dataset %s with byte %lld\n", argv[1],
                argv[2], byte);
        return 1;
    }
    int fd = open(argv[1], O_RDWR);
    unsigned char c = 0;
    off_t at = (off_t)off + (off_t)byte;
    if (fd < 0 || pread(fd, &c, 1, at) != 1) {
        perror("test_ckpt_flip: read");
        return 1;
    }
    c ^= (unsigned char)(1u << bit);
    if (pwrite(fd, &c, 1, at) != 1 || close(fd) != 0) {
        perror("test_ckpt_flip: write");
        return 1;
    }
    printf("%s: flipped bit %d of byte %lld of %s (file offset %lld)\n", argv[1], bit, byte,
           argv[2], (long long)at);
    return 0;
}
