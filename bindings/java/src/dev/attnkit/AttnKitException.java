package dev.attnkit;

import java.nio.charset.StandardCharsets;

/**
 * An error reported by attnkit: a {@link Code} (numbered like absl::StatusCode) and the library's
 * message. An invalid configuration is {@link Code#INVALID_ARGUMENT} with a message that starts
 * with the field's path, the same text in every language.
 */
public class AttnKitException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** Status codes, numbered like absl::StatusCode (and the C ABI's attnkit_status_code). */
  public enum Code {
    OK(0),
    CANCELLED(1),
    UNKNOWN(2),
    INVALID_ARGUMENT(3),
    DEADLINE_EXCEEDED(4),
    NOT_FOUND(5),
    ALREADY_EXISTS(6),
    PERMISSION_DENIED(7),
    RESOURCE_EXHAUSTED(8),
    FAILED_PRECONDITION(9),
    ABORTED(10),
    OUT_OF_RANGE(11),
    UNIMPLEMENTED(12),
    INTERNAL(13),
    UNAVAILABLE(14),
    DATA_LOSS(15),
    UNAUTHENTICATED(16);

    private final int value;

    Code(int value) {
      this.value = value;
    }

    /** The numeric value (absl::StatusCode). */
    public int value() {
      return value;
    }

    /** The code numbered {@code value}; {@link #UNKNOWN} for a number attnkit does not define. */
    public static Code of(int value) {
      for (Code code : values()) {
        if (code.value == value) return code;
      }
      return UNKNOWN;
    }
  }

  private final Code code;
  private final String statusMessage;

  public AttnKitException(Code code, String message) {
    this(code, message, null);
  }

  public AttnKitException(Code code, String message, Throwable cause) {
    super(code + ": " + message, cause);
    this.code = code;
    this.statusMessage = message;
  }

  /** Raised by libattnkit_java from an attnkit_status (the message crosses as UTF-8). */
  private AttnKitException(int code, byte[] utf8Message) {
    this(Code.of(code), new String(utf8Message, StandardCharsets.UTF_8));
  }

  /** The status code. */
  public Code code() {
    return code;
  }

  /** The library's message without the code prefix of {@link #getMessage()}. */
  public String statusMessage() {
    return statusMessage;
  }
}
