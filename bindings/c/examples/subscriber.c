/*
 * A sealpost subscriber in C with libmosquitto as the MQTT transport.
 *
 *   subscriber HOST PORT CA CRL CERT KEY STATE FILTER COUNT
 *
 * Connects over TLS (trusting CA, presenting CERT/KEY: the sealpost broker gives key
 * messages to their recipient only), subscribes to its own key messages and to FILTER,
 * hands everything that arrives to the library, prints each message that opened
 * ("TOPIC from PUBLISHER seq N: TEXT") and each rejection ("rejected on TOPIC: WHY"),
 * and exits 0 after COUNT messages (1 after 60 s without them). STATE keeps the replay
 * windows, so a restarted subscriber does not accept old messages again.
 */
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <mosquitto.h>
#include <sealpost.h>

#include "common.h"

struct context {
    sealpost_subscriber *sub;
    const char *state_path;
    int delivered;
    int subacks;
    bool failed;
};

/* Tells a waiting test that both subscriptions are in place (key messages and data). */
static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                         const int *granted_qos)
{
    (void)mosq;
    (void)mid;
    (void)qos_count;
    (void)granted_qos;
    struct context *ctx = obj;
    if (++ctx->subacks == 2) {
        printf("subscribed\n");
        fflush(stdout);
    }
}

/* Acts on every queued output, in order: stores the replay windows (before the messages
 * they cover are used), prints messages and rejections. */
static void drain(struct context *ctx)
{
    sealpost_result r;
    sealpost_output out;
    while ((r = sealpost_subscriber_next_output(ctx->sub, &out)) == SEALPOST_OK) {
        switch (out.kind) {
        case SEALPOST_OUTPUT_MESSAGE:
            printf("%s from %s seq %llu: %.*s\n", out.topic, out.publisher,
                   (unsigned long long)out.seq, (int)out.data_len, (const char *)out.data);
            fflush(stdout);
            ctx->delivered++;
            break;
        case SEALPOST_OUTPUT_REJECTED:
            printf("rejected on %s: %s (%s)\n", out.topic, sealpost_result_message(out.reason),
                   out.detail);
            fflush(stdout);
            break;
        case SEALPOST_OUTPUT_PERSIST:
            if (store_state(ctx->state_path, out.data, out.data_len) != 0) {
                perror("store state");
                ctx->failed = true;
            }
            break;
        default:
            break;
        }
    }
    if (r != SEALPOST_NO_OUTPUT) {
        fprintf(stderr, "next_output: %s\n", sealpost_result_message(r));
        ctx->failed = true;
    }
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    (void)mosq;
    struct context *ctx = obj;
    sealpost_result r = sealpost_subscriber_incoming(ctx->sub, msg->topic, msg->payload,
                                                     (size_t)msg->payloadlen, now_ms());
    if (r != SEALPOST_OK) {
        fprintf(stderr, "sealpost_subscriber_incoming: %s\n", sealpost_result_message(r));
        ctx->failed = true;
        return;
    }
    drain(ctx);
}

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: %s HOST PORT CA CRL CERT KEY STATE FILTER COUNT\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *ca_path = argv[3], *cert_path = argv[5], *key_path = argv[6],
               *filter = argv[8];
    int port = atoi(argv[2]), count = atoi(argv[9]);
    char *ca = read_file(ca_path, NULL), *crl = read_file(argv[4], NULL),
         *cert = read_file(cert_path, NULL), *key = read_file(key_path, NULL);
    size_t state_len = 0;
    char *state = read_file(argv[7], &state_len); /* NULL on the first start */
    struct context ctx = {.sub = NULL, .state_path = argv[7], .delivered = 0, .subacks = 0, .failed = false};
    int status = 1;
    mosquitto_lib_init();
    struct mosquitto *mosq = NULL;
    if (ca == NULL || crl == NULL || cert == NULL || key == NULL) {
        fprintf(stderr, "cannot read a PEM file\n");
        goto done;
    }

    sealpost_result r = sealpost_subscriber_new(ca, crl, cert, key, (const uint8_t *)state,
                                                state_len, &ctx.sub);
    if (r != SEALPOST_OK) {
        fprintf(stderr, "sealpost_subscriber_new: %s\n", sealpost_result_message(r));
        goto done;
    }

    mosq = mosquitto_new(NULL, true, &ctx);
    if (mosq == NULL)
        goto done;
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_message_callback_set(mosq, on_message);
    mosquitto_subscribe_callback_set(mosq, on_subscribe);
    if (mosquitto_tls_set(mosq, ca_path, NULL, cert_path, key_path, NULL) != MOSQ_ERR_SUCCESS ||
        mosquitto_connect(mosq, host, port, 30) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "cannot connect to %s:%d\n", host, port);
        goto done;
    }
    if (mosquitto_subscribe(mosq, NULL, sealpost_subscriber_key_filter(ctx.sub), 1) !=
            MOSQ_ERR_SUCCESS ||
        mosquitto_subscribe(mosq, NULL, filter, 1) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "cannot subscribe\n");
        goto done;
    }
    time_t deadline = time(NULL) + 60;
    while (ctx.delivered < count && !ctx.failed && time(NULL) < deadline) {
        if (mosquitto_loop(mosq, 100, 1) != MOSQ_ERR_SUCCESS)
            break;
        /* Messages held for a key or publisher that never came are rejected in time. */
        if (sealpost_subscriber_tick(ctx.sub, now_ms()) != SEALPOST_OK)
            break;
        drain(&ctx);
    }
    if (ctx.delivered >= count && !ctx.failed)
        status = 0;
    else
        fprintf(stderr, "%d of %d messages delivered\n", ctx.delivered, count);

done:
    if (mosq != NULL) {
        mosquitto_disconnect(mosq);
        mosquitto_destroy(mosq);
    }
    mosquitto_lib_cleanup();
    sealpost_subscriber_free(ctx.sub);
    free(ca);
    free(crl);
    free(cert);
    free(key);
    free(state);
    return status;
}
