/* family_internal.h: the ops tables of the model families, which only the
 * family registry (family_registry.c) names; everything else finds a family
 * by name through mpq_family_find (mpq_family.h). */
#ifndef MPQ_FAMILY_INTERNAL_H
#define MPQ_FAMILY_INTERNAL_H

#include "mpq_family.h"

extern const mpq_family_ops mpq_family_llama_ops; /* family_llama.c */
extern const mpq_family_ops mpq_family_cnn_ops;   /* family_cnn.c */

#endif
