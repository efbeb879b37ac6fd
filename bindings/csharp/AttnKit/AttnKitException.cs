using System;
using AttnKit.Native;

namespace AttnKit
{
    /// <summary>Status codes of attnkit errors, numbered like absl::StatusCode (and google.rpc.Code).</summary>
    public enum StatusCode
    {
        Ok = 0,
        Cancelled = 1,
        Unknown = 2,
        InvalidArgument = 3,
        DeadlineExceeded = 4,
        NotFound = 5,
        AlreadyExists = 6,
        PermissionDenied = 7,
        ResourceExhausted = 8,
        FailedPrecondition = 9,
        Aborted = 10,
        OutOfRange = 11,
        Unimplemented = 12,
        Internal = 13,
        Unavailable = 14,
        DataLoss = 15,
        Unauthenticated = 16,
    }

    /// <summary>An error reported by libattnkit: its status code and message.</summary>
    public sealed class AttnKitException : Exception
    {
        public AttnKitException(StatusCode code, string message)
            : base(message)
        {
            Code = code;
        }

        /// <summary>The status code (INVALID_ARGUMENT for bad configs and tensors).</summary>
        public StatusCode Code { get; }

        public override string ToString() => $"{nameof(AttnKitException)} ({Code}): {Message}";

        /// <summary>Reads and frees a non-NULL attnkit_status*.</summary>
        internal static AttnKitException FromNativeStatus(IntPtr status)
        {
            try
            {
                var code = (StatusCode)(int)AttnKitNative.attnkit_status_get_code(status);
                string message = AttnKitNative.attnkit_status_get_message(status) ?? string.Empty;
                return new AttnKitException(code, message);
            }
            finally
            {
                AttnKitNative.attnkit_status_free(status);
            }
        }
    }
}
