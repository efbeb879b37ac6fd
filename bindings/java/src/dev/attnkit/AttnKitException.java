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
    /** Not an error (never thrown). */
    OK(0),
    /** The operation was cancelled. */
    CANCELLED(1),
    /** An unknown error, or a code attnkit does not define. */
    UNKNOWN(2),
    /** An invalid argument or configuration; the message starts with the field or argument. */
    INVALID_ARGUMENT(3),
    /** A deadline passed before the operation completed. */
    DEADLINE_EXCEEDED(4),
    /** Something named was not found. */
    NOT_FOUND(5),
    /** Something to be created already exists. */
    ALREADY_EXISTS(6),
    /** The caller may not do this. */
    PERMISSION_DENIED(7),
    /** Memory or another resource ran out. */
    RESOURCE_EXHAUSTED(8),
    /** The system is not in the state the call needs (e.g. the native library did not load). */
    FAILED_PRECONDITION(9),
    /** The operation was aborted. */
    ABORTED(10),
    /** A value lies past the valid range. */
    OUT_OF_RANGE(11),
    /** Not implemented or not supported here. */
    UNIMPLEMENTED(12),
    /** An internal error: a broken invariant of attnkit. */
    INTERNAL(13),
    /** The service is unavailable for now. */
    UNAVAILABLE(14),
    /** Unrecoverable data loss or corruption. */
    DATA_LOSS(15),
    /** The caller is not authenticated. */
    UNAUTHENTICATED(16);

    private final int value;

    Code(int value) {
      this.value = value;
    }

    /**
     * The numeric value.
     *
     * @return the code's number (absl::StatusCode, attnkit_status_code)
     */
    public int value() {
      return value;
    }

    /**
     * The code of a number.
     *
     * @param value a status code number (absl::StatusCode, attnkit_status_code)
     * @return the code numbered {@code value}; {@link #UNKNOWN} for a number attnkit does not define
     */
    public static Code of(int value) {
      for (Code code : values()) {
        if (code.value == value) return code;
      }
      return UNKNOWN;
    }
  }

  /** The status code (serialized with the exception). */
  private final Code code;

  /** The library's message without the code prefix (serialized with the exception). */
  private final String statusMessage;

  /**
   * An error with no cause.
   *
   * @param code the status code
   * @param message the library's message (without the code)
   */
  public AttnKitException(Code code, String message) {
    this(code, message, null);
  }

  /**
   * An error with a cause; {@link #getMessage()} is the code, ": " and {@code message}.
   *
   * @param code the status code
   * @param message the library's message (without the code)
   * @param cause the underlying failure, or null
   */
  public AttnKitException(Code code, String message, Throwable cause) {
    super(code + ": " + message, cause);
    this.code = code;
    this.statusMessage = message;
  }

  /** Raised by libattnkit_java from an attnkit_status (the message crosses as UTF-8). */
  private AttnKitException(int code, byte[] utf8Message) {
    this(Code.of(code), new String(utf8Message, StandardCharsets.UTF_8));
  }

  /**
   * The status code.
   *
   * @return the error's code
   */
  public Code code() {
    return code;
  }

  /**
   * The library's message.
   *
   * @return the message without the code prefix of {@link #getMessage()}
   */
  public String statusMessage() {
    return statusMessage;
  }
}
