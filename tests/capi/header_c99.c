/* Compiles the public C headers as strict C99 (-std=c99 -pedantic -Wall -Wextra -Werror, see
 * extra.cmake) and checks that the library it links matches them. header_c99_all.h is generated at
 * configure time and includes every capi/include/attnkit/attnkit*.h, each twice (include guards);
 * each header is also compiled alone in its own translation unit (self-contained). */
#include "header_c99_all.h"

#include <stdio.h>
#include <string.h>

int main(void) {
  const char* version = attnkit_version_string();
  attnkit_status* status = NULL;
  if (attnkit_abi_version() != ATTNKIT_ABI_VERSION) {
    fprintf(stderr, "attnkit_abi_version() = %d, header says %d\n", (int)attnkit_abi_version(),
            ATTNKIT_ABI_VERSION);
    return 1;
  }
  if (version == NULL || strlen(version) == 0) {
    fprintf(stderr, "attnkit_version_string() is empty\n");
    return 1;
  }
  /* A C caller sees the status convention: NULL is OK, errors carry a code and message. */
  status = attnkit_tensor_check(NULL, "x", -1, 0);
  if (attnkit_status_get_code(status) != ATTNKIT_INVALID_ARGUMENT ||
      strstr(attnkit_status_get_message(status), "x: must not be NULL") == NULL) {
    fprintf(stderr, "unexpected status: %s\n", attnkit_status_get_message(status));
    attnkit_status_free(status);
    return 1;
  }
  attnkit_status_free(status);
  printf("attnkit %s, ABI %d: C99 headers OK\n", version, (int)attnkit_abi_version());
  return 0;
}
