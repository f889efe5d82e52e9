/*
 * The C side of benches/c_vs_rust.rs: seal and open throughput through the C API.
 *
 *   seal_open CA CRL PUB_CERT PUB_KEY SUB_CERT SUB_KEY COUNT SIZE
 *
 * Seals COUNT messages of SIZE bytes (sealpost_publisher_publish + draining its outputs),
 * then opens them all (sealpost_subscriber_incoming + draining), and prints
 * "seal_per_sec N" and "open_per_sec N". Exits non-zero if any message fails to open.
 */
#include <stdint.h>
#include <time.h>

#include <sealpost.h>

#include "../examples/common.h"

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Keeps the publisher state in memory (the Rust side of the benchmark does the same). */
static int save_in_memory(void *ctx, const uint8_t *state, size_t state_len)
{
    (void)ctx;
    (void)state;
    (void)state_len;
    return 0;
}

static void check(sealpost_result r, const char *what)
{
    if (r != SEALPOST_OK) {
        fprintf(stderr, "%s: %s\n", what, sealpost_result_message(r));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: %s CA CRL PUB_CERT PUB_KEY SUB_CERT SUB_KEY COUNT SIZE\n",
                argv[0]);
        return 2;
    }
    char *pem[6];
    for (int i = 0; i < 6; i++) {
        pem[i] = read_file(argv[i + 1], NULL);
        if (pem[i] == NULL) {
            fprintf(stderr, "cannot read %s\n", argv[i + 1]);
            return 1;
        }
    }
    size_t count = (size_t)atol(argv[7]), size = (size_t)atol(argv[8]);
    uint64_t now = now_ms();
    sealpost_publisher *pub = NULL;
    sealpost_subscriber *sub = NULL;
    check(sealpost_publisher_new(pem[0], pem[1], pem[2], pem[3], NULL, 0, save_in_memory, NULL,
                                 now, &pub), "publisher");
    check(sealpost_subscriber_new(pem[0], pem[1], pem[4], pem[5], NULL, 0, &sub), "subscriber");
    check(sealpost_publisher_grant(pub, pem[4], now), "grant");

    sealpost_output out;
    /* The key message: handed straight to the subscriber. */
    while (sealpost_publisher_next_output(pub, &out) == SEALPOST_OK)
        if (out.kind == SEALPOST_OUTPUT_PUBLISH)
            check(sealpost_subscriber_incoming(sub, out.topic, out.data, out.data_len, now),
                  "key message");

    uint8_t *payload = calloc(size, 1);
    uint8_t **envelopes = calloc(count, sizeof *envelopes);
    size_t *lengths = calloc(count, sizeof *lengths);
    const char *topic = "bench/c";

    double start = seconds();
    for (size_t i = 0; i < count; i++) {
        check(sealpost_publisher_publish(pub, topic, payload, size, now), "publish");
        while (sealpost_publisher_next_output(pub, &out) == SEALPOST_OK) {
            if (out.kind == SEALPOST_OUTPUT_PUBLISH) {
                /* Copied, as a program handing it to its MQTT client would. */
                envelopes[i] = malloc(out.data_len);
                memcpy(envelopes[i], out.data, out.data_len);
                lengths[i] = out.data_len;
            }
        }
    }
    double sealed = seconds() - start;

    size_t opened = 0;
    start = seconds();
    for (size_t i = 0; i < count; i++) {
        check(sealpost_subscriber_incoming(sub, topic, envelopes[i], lengths[i], now), "incoming");
        while (sealpost_subscriber_next_output(sub, &out) == SEALPOST_OK)
            if (out.kind == SEALPOST_OUTPUT_MESSAGE && out.data_len == size)
                opened++;
    }
    double open_time = seconds() - start;

    printf("seal_per_sec %.0f\nopen_per_sec %.0f\n", (double)count / sealed,
           (double)count / open_time);
    for (size_t i = 0; i < count; i++)
        free(envelopes[i]);
    free(envelopes);
    free(lengths);
    free(payload);
    sealpost_subscriber_free(sub);
    sealpost_publisher_free(pub);
    for (int i = 0; i < 6; i++)
        free(pem[i]);
    if (opened != count) {
        fprintf(stderr, "opened %zu of %zu\n", opened, count);
        return 1;
    }
    return 0;
}
