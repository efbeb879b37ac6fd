/* A program outside the tree, built against the installed attnkit: checks the ABI and validates a
 * config through the C ABI. */
#include <stdio.h>
#include <string.h>

#include <attnkit/attnkit.h>

int main(void) {
  const char config[] = "num_layers: 1 num_heads: 2 num_kv_heads: 1 head_dim: 8";
  attnkit_status* status;
  if (attnkit_abi_version() != ATTNKIT_ABI_VERSION) return 1;
  status = attnkit_config_validate_text(ATTNKIT_CONFIG_SESSION, config, strlen(config));
  if (status != NULL) {
    fprintf(stderr, "%s\n", attnkit_status_get_message(status));
    attnkit_status_free(status);
    return 1;
  }
  printf("attnkit %s\n", attnkit_version_string());
  return 0;
}
