using System;
using AttnKit.Native;

namespace AttnKit
{
    /// <summary>The loaded native library: versions and the ABI check every object runs first.</summary>
    public static class Library
    {
        /// <summary>The ABI major version this binding was built for (libattnkit.so.1).</summary>
        public const int ExpectedAbiVersion = AttnKitNative.ATTNKIT_ABI_VERSION;

        private static readonly object Gate = new();
        private static bool _checked;

        /// <summary>attnkit_abi_version() of the loaded libattnkit.</summary>
        public static int AbiVersion => AttnKitNative.attnkit_abi_version();

        /// <summary>attnkit_version_string() of the loaded libattnkit, e.g. "0.1.0".</summary>
        public static string Version
        {
            get
            {
                EnsureLoaded();
                return AttnKitNative.attnkit_version_string();
            }
        }

        /// <summary>
        /// Threads every computing call of the library uses from now on, in every thread: 1 to 1024,
        /// or 0 (the default) for the OpenMP default (OMP_NUM_THREADS, else one per core). The calling
        /// thread's own OpenMP setting is given back after each call. Setting a value outside
        /// [0, 1024] throws an <see cref="AttnKitException"/> with StatusCode.InvalidArgument.
        /// </summary>
        public static int NumThreads
        {
            get
            {
                EnsureLoaded();
                return AttnKitNative.attnkit_get_num_threads();
            }
            set
            {
                EnsureLoaded();
                AttnKitNative.attnkit_set_num_threads(value);
            }
        }

        /// <summary>Loads the native library and checks its ABI version (once).</summary>
        public static void EnsureLoaded()
        {
            if (_checked)
            {
                return;
            }
            lock (Gate)
            {
                if (_checked)
                {
                    return;
                }
                int actual;
                try
                {
                    actual = AttnKitNative.attnkit_abi_version();
                }
                catch (Exception e) when (e is DllNotFoundException || e is EntryPointNotFoundException ||
                                          e is TypeInitializationException)
                {
                    throw new AttnKitException(StatusCode.Unavailable,
                        "attnkit: cannot load the native libraries (libattnkit_csharp.so and " +
                        $"libattnkit.so.{ExpectedAbiVersion}): {(e.InnerException ?? e).Message}");
                }
                CheckAbiVersion(actual);
                _checked = true;
            }
        }

        /// <summary>Throws unless <paramref name="actual"/> is the ABI version this binding expects.</summary>
        internal static void CheckAbiVersion(int actual)
        {
            if (actual != ExpectedAbiVersion)
            {
                throw new AttnKitException(StatusCode.FailedPrecondition,
                    $"attnkit: the loaded libattnkit has ABI version {actual}, but this binding " +
                    $"(AttnKit {typeof(Library).Assembly.GetName().Version}) needs ABI version " +
                    $"{ExpectedAbiVersion} (libattnkit.so.{ExpectedAbiVersion})");
            }
        }
    }
}
