/* SPDX-License-Identifier: Apache-2.0
 * Plain C API over dtp::Segmenter. Functions return 0 (or a non-NULL handle) on success;
 * on failure dtp_last_error() gives the message of the calling thread's last error. */
#ifndef DTP_RUNTIME_SEGMENTER_C_H
#define DTP_RUNTIME_SEGMENTER_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dtp_segmenter dtp_segmenter;

enum dtp_mode { DTP_MODE_WHOLE = 0, DTP_MODE_SLIDE = 1 };

typedef struct dtp_options
{
    float mean[3];          /* RGB, 0-255 scale */
    float std[3];
    int32_t patch_size;
    int32_t mode;           /* enum dtp_mode */
    int32_t crop[2];        /* (h, w); 0: default */
    int32_t stride[2];      /* (h, w); 0: two thirds of the crop */
    int32_t trained_size[2];
    int32_t bgr;            /* 1: images are BGR */
    const char* plugin_library; /* NULL: none */
    int32_t device;
    int32_t max_batch;      /* windows per inference for dynamic-batch engines (default 8) */
} dtp_options;

/* Fill options with the defaults of dtp::Options. */
void dtp_options_init(dtp_options* options);

/* A segmenter for a TensorRT engine; NULL on failure (see dtp_last_error). */
dtp_segmenter* dtp_segmenter_create(const char* engine_path, const dtp_options* options);

/* Segment a contiguous height x width x 3 uint8 image into labels (height * width int32).
 * keep_ratio (may be NULL) receives up to keep_ratio_len per-stage keep ratios. */
int dtp_segmenter_predict(dtp_segmenter* segmenter, const uint8_t* image, int32_t height, int32_t width,
    int32_t* labels, float* keep_ratio, size_t keep_ratio_len);

/* Number of classes (0 before the first prediction). */
int32_t dtp_segmenter_num_classes(const dtp_segmenter* segmenter);

void dtp_segmenter_destroy(dtp_segmenter* segmenter);

/* The calling thread's last error message ("" when none). */
const char* dtp_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* DTP_RUNTIME_SEGMENTER_C_H */
