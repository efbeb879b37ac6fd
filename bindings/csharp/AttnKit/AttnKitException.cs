using System;
using AttnKit.Native;

namespace AttnKit
{
    /// <summary>Status codes of attnkit errors, numbered like absl::StatusCode (and google.rpc.Code).</summary>
    public enum StatusCode
    {
        /// <summary>Not an error.</summary>
        Ok = 0,
        /// <summary>The operation was cancelled.</summary>
        Cancelled = 1,
        /// <summary>An error of no other kind.</summary>
        Unknown = 2,
        /// <summary>A bad argument or config; the message names it (a field path, a tensor name).</summary>
        InvalidArgument = 3,
        /// <summary>A deadline passed.</summary>
        DeadlineExceeded = 4,
        /// <summary>A file or entity was not found (e.g. a model file).</summary>
        NotFound = 5,
        /// <summary>The entity exists already.</summary>
        AlreadyExists = 6,
        /// <summary>Not permitted.</summary>
        PermissionDenied = 7,
        /// <summary>Out of memory or another resource.</summary>
        ResourceExhausted = 8,
        /// <summary>The object is not in a state for the call (e.g. layers out of order, a closed object).</summary>
        FailedPrecondition = 9,
        /// <summary>The operation was aborted.</summary>
        Aborted = 10,
        /// <summary>A value past its valid range.</summary>
        OutOfRange = 11,
        /// <summary>Not available in this build or for this configuration (e.g. CUDA without a CUDA build).</summary>
        Unimplemented = 12,
        /// <summary>A bug in attnkit: please report it with the message.</summary>
        Internal = 13,
        /// <summary>A service is unavailable.</summary>
        Unavailable = 14,
        /// <summary>Unrecoverable data loss or corruption.</summary>
        DataLoss = 15,
        /// <summary>Not authenticated.</summary>
        Unauthenticated = 16,
    }

    /// <summary>An error reported by libattnkit: its status code and message.</summary>
    public sealed class AttnKitException : Exception
    {
        /// <summary>An error with <paramref name="code"/> and <paramref name="message"/>.</summary>
        /// <param name="code">The status code.</param>
        /// <param name="message">What went wrong (libattnkit's messages name the argument or field).</param>
        public AttnKitException(StatusCode code, string message)
            : base(message)
        {
            Code = code;
        }

        /// <summary>The status code (INVALID_ARGUMENT for bad configs and tensors).</summary>
        public StatusCode Code { get; }

        /// <summary>The code and the message.</summary>
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
