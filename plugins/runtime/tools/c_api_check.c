/* SPDX-License-Identifier: Apache-2.0
 * Test driver in plain C: the C API end to end on a real model.
 *
 *   dtp_c_api_check MODEL.onnx IMAGE.rgb HEIGHT WIDTH LABELS.bin
 *
 * IMAGE.rgb: HEIGHT x WIDTH x 3 raw uint8. Creates a segmenter, checks the error paths
 * (missing model, bad mode, NULL arguments: each refused with a message from dtp_last_error),
 * predicts with two segmenters of the same model in one process (their labels must agree),
 * writes the labels (int32) and destroys both. Prints the keep ratios. */
#include "dtp/segmenter_c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int expect_error(int failed, const char* what)
{
    if (!failed || dtp_last_error()[0] == '\0')
    {
        fprintf(stderr, "%s: expected a failure with a message\n", what);
        return 1;
    }
    printf("%s: %s\n", what, dtp_last_error());
    return 0;
}

int main(int argc, char** argv)
{
    if (argc != 6)
    {
        fprintf(stderr, "usage: %s MODEL IMAGE.rgb HEIGHT WIDTH LABELS.bin\n", argv[0]);
        return 2;
    }
    const int32_t height = atoi(argv[3]);
    const int32_t width = atoi(argv[4]);
    const size_t pixels = (size_t) height * (size_t) width;
    uint8_t* image = malloc(pixels * 3);
    int32_t* labels = malloc(pixels * sizeof(int32_t));
    int32_t* labels2 = malloc(pixels * sizeof(int32_t));
    FILE* in = fopen(argv[2], "rb");
    if (!image || !labels || !labels2 || !in || fread(image, 1, pixels * 3, in) != pixels * 3)
    {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 2;
    }
    fclose(in);

    int errors = 0;
    dtp_options options;
    dtp_options_init(&options);
    errors += expect_error(dtp_segmenter_create("missing.onnx", &options) == NULL, "missing model");
    options.mode = 7;
    errors += expect_error(dtp_segmenter_create(argv[1], &options) == NULL, "bad mode");
    options.mode = DTP_MODE_WHOLE;

    dtp_segmenter* first = dtp_segmenter_create(argv[1], NULL); /* NULL: the defaults */
    dtp_segmenter* second = dtp_segmenter_create(argv[1], &options);
    if (first == NULL || second == NULL)
    {
        fprintf(stderr, "dtp_segmenter_create: %s\n", dtp_last_error());
        return 1;
    }
    errors += expect_error(dtp_segmenter_predict(first, NULL, height, width, labels, NULL, 0) != 0, "NULL image");
    errors += expect_error(dtp_segmenter_predict(first, image, 0, width, labels, NULL, 0) != 0, "empty image");
    errors += expect_error(dtp_segmenter_predict(NULL, image, height, width, labels, NULL, 0) != 0, "NULL segmenter");

    float ratio[8] = {0};
    if (dtp_segmenter_predict(first, image, height, width, labels, ratio, 8) != 0
        || dtp_segmenter_predict(second, image, height, width, labels2, NULL, 0) != 0)
    {
        fprintf(stderr, "dtp_segmenter_predict: %s\n", dtp_last_error());
        return 1;
    }
    if (dtp_last_error()[0] != '\0')
    {
        fprintf(stderr, "a success left the error message set: %s\n", dtp_last_error());
        errors += 1;
    }
    if (memcmp(labels, labels2, pixels * sizeof(int32_t)) != 0)
    {
        fprintf(stderr, "two segmenters of one model disagree\n");
        errors += 1;
    }
    printf("classes %d\nkeep_ratio", dtp_segmenter_num_classes(first));
    for (int s = 0; s < 8 && ratio[s] > 0.0f; ++s)
    {
        printf(" %.9g", ratio[s]);
    }
    printf("\n");
    FILE* out = fopen(argv[5], "wb");
    if (!out || fwrite(labels, sizeof(int32_t), pixels, out) != pixels)
    {
        fprintf(stderr, "cannot write %s\n", argv[5]);
        return 2;
    }
    fclose(out);
    dtp_segmenter_destroy(first);
    dtp_segmenter_destroy(second);
    free(image);
    free(labels);
    free(labels2);
    return errors ? 1 : 0;
}
