/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the configuration parser: inih line splitting, every directive's value
 * parser (durations, sizes, listen addresses, names, paths) and the whole-file checks, through
 * cli_config_parse_string. Opens and binds nothing. The seed corpus in corpus/config replays in
 * test_fuzz_replay. */
#include "fuzz.h"

#include <cli/cli.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <util/util.h>

int fuzz_config_check(const uint8_t *data, size_t size, char *err, size_t err_len)
{
    struct cli_config *cfg = malloc(sizeof(*cfg));
    char *text = malloc(size + 1);
    int rc;

    if (cfg == NULL || text == NULL)
        abort();
    /* The parser takes a C string (cli_config_load refuses files with NUL bytes first). */
    memcpy(text, data, size);
    text[size] = '\0';
    err[0] = '\0';
    rc = cli_config_parse_string(text, "fuzz.conf", "/fuzz", cfg, err, err_len);
    if (rc == UTIL_OK) {
        /* What validate() promises once the file is accepted. */
        if (cfg->store_path[0] == '\0' || cfg->crl.publish_dir[0] == '\0' ||
            cfg->public_url[0] == '\0' || cfg->n_issuers < 1 || cfg->n_issuers > CLI_MAX_ISSUERS)
            abort();
    } else if (rc != UTIL_ECONFIG || strncmp(err, "fuzz.conf", 9) != 0) {
        abort(); /* an error must name the file */
    }
    free(text);
    free(cfg);
    return rc;
}

int fuzz_config_one(const uint8_t *data, size_t size)
{
    char err[1024];
    (void)fuzz_config_check(data, size, err, sizeof(err)); /* both outcomes are data */
    return 0;
}

#ifdef PKIVA_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_config_one(data, size);
}
#endif
