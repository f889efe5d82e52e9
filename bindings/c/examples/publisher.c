/*
 * A sealpost publisher in C with libmosquitto as the MQTT transport.
 *
 *   publisher HOST PORT CA CRL CERT KEY STATE SUBSCRIBER_CERT TOPIC COUNT
 *
 * Connects over TLS (trusting CA, presenting CERT/KEY: the broker lets only this
 * publisher write its key-message topics), grants SUBSCRIBER_CERT, then publishes COUNT
 * sealed messages "message N" on TOPIC at QoS 1, and exits once the broker has
 * acknowledged them all. STATE is the file where the library's state is kept.
 */
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <mosquitto.h>
#include <sealpost.h>

#include "common.h"

/* PUBACKs still awaited. */
static int unacked = 0;

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    (void)mosq;
    (void)obj;
    (void)mid;
    unacked--;
}

/* Publishes every queued output, in order. */
static int drain(sealpost_publisher *pub, struct mosquitto *mosq)
{
    sealpost_output out;
    sealpost_result r;
    while ((r = sealpost_publisher_next_output(pub, &out)) == SEALPOST_OK) {
        if (out.kind == SEALPOST_OUTPUT_PUBLISH) {
            int rc = mosquitto_publish(mosq, NULL, out.topic, (int)out.data_len, out.data,
                                       out.qos, out.retain);
            if (rc != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "publish: %s\n", mosquitto_strerror(rc));
                return -1;
            }
            unacked++;
        }
    }
    if (r != SEALPOST_NO_OUTPUT) {
        fprintf(stderr, "next_output: %s\n", sealpost_result_message(r));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 11) {
        fprintf(stderr,
                "usage: %s HOST PORT CA CRL CERT KEY STATE SUBSCRIBER_CERT TOPIC COUNT\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1], *ca_path = argv[3], *cert_path = argv[5],
               *key_path = argv[6], *state_path = argv[7], *topic = argv[9];
    int port = atoi(argv[2]), count = atoi(argv[10]);
    char *ca = read_file(ca_path, NULL), *crl = read_file(argv[4], NULL),
         *cert = read_file(cert_path, NULL), *key = read_file(key_path, NULL),
         *sub_cert = read_file(argv[8], NULL);
    size_t state_len = 0;
    char *state = read_file(state_path, &state_len); /* NULL on the first start */
    int status = 1;
    mosquitto_lib_init();
    sealpost_publisher *pub = NULL;
    struct mosquitto *mosq = NULL;
    if (ca == NULL || crl == NULL || cert == NULL || key == NULL || sub_cert == NULL) {
        fprintf(stderr, "cannot read a PEM file\n");
        goto done;
    }

    /* The state (sequence numbers, keys, grants) is saved through save_to_file before
     * every change takes effect. */
    sealpost_result r = sealpost_publisher_new(ca, crl, cert, key, (const uint8_t *)state,
                                               state_len, save_to_file, (void *)state_path,
                                               now_ms(), &pub);
    if (r != SEALPOST_OK) {
        fprintf(stderr, "sealpost_publisher_new: %s\n", sealpost_result_message(r));
        goto done;
    }

    mosq = mosquitto_new(NULL, true, NULL);
    if (mosq == NULL)
        goto done;
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_publish_callback_set(mosq, on_publish);
    if (mosquitto_tls_set(mosq, ca_path, NULL, cert_path, key_path, NULL) != MOSQ_ERR_SUCCESS ||
        mosquitto_connect(mosq, host, port, 30) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "cannot connect to %s:%d\n", host, port);
        goto done;
    }

    /* After every (re)connect: the current key messages, in case the broker lost them. */
    r = sealpost_publisher_connected(pub);
    if (r != SEALPOST_OK) {
        fprintf(stderr, "sealpost_publisher_connected: %s\n", sealpost_result_message(r));
        goto done;
    }
    r = sealpost_publisher_grant(pub, sub_cert, now_ms());
    if (r != SEALPOST_OK) {
        fprintf(stderr, "sealpost_publisher_grant: %s\n", sealpost_result_message(r));
        goto done;
    }
    if (drain(pub, mosq) != 0)
        goto done;
    /* The first message alone, the rest as one burst (sealed together under one
     * signature; each envelope still opens on its own). */
    if (count > 0) {
        char texts[count][32];
        sealpost_message burst[count];
        for (int i = 0; i < count; i++) {
            int n = snprintf(texts[i], sizeof texts[i], "message %d", i);
            burst[i] = (sealpost_message){topic, (const uint8_t *)texts[i], (size_t)n};
        }
        r = sealpost_publisher_publish(pub, topic, burst[0].payload, burst[0].payload_len,
                                       now_ms());
        if (r != SEALPOST_OK) {
            fprintf(stderr, "sealpost_publisher_publish: %s\n", sealpost_result_message(r));
            goto done;
        }
        r = sealpost_publisher_publish_many(pub, burst + 1, (size_t)(count - 1), now_ms());
        if (r != SEALPOST_OK) {
            fprintf(stderr, "sealpost_publisher_publish_many: %s\n",
                    sealpost_result_message(r));
            goto done;
        }
        if (drain(pub, mosq) != 0)
            goto done;
    }
    /* Wait (30 s at most) for the broker to acknowledge every packet. */
    time_t deadline = time(NULL) + 30;
    while (unacked > 0 && time(NULL) < deadline) {
        if (mosquitto_loop(mosq, 100, 1) != MOSQ_ERR_SUCCESS)
            break;
    }
    if (unacked > 0) {
        fprintf(stderr, "%d packets not acknowledged\n", unacked);
        goto done;
    }
    printf("published %d sealed messages on %s\n", count, topic);
    status = 0;

done:
    if (mosq != NULL) {
        mosquitto_disconnect(mosq);
        mosquitto_destroy(mosq);
    }
    mosquitto_lib_cleanup();
    sealpost_publisher_free(pub);
    free(ca);
    free(crl);
    free(cert);
    free(key);
    free(sub_cert);
    free(state);
    return status;
}
