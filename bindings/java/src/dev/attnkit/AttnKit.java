package dev.attnkit;

import dev.attnkit.internal.AttnKitNative;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Library-wide entry points: versions and the native library loader.
 *
 * <p>The native libraries (libattnkit_java.so, the JNI wrapper, and libattnkit.so.1, the C ABI it
 * links) are found, in order:
 *
 * <ol>
 *   <li>in the folder named by the system property {@code attnkit.native.dir} (or the environment
 *       variable {@code ATTNKIT_JAVA_NATIVE_DIR}), e.g. a build tree;
 *   <li>in the jar, under {@code /dev/attnkit/native/<os>-<arch>/}: extracted to a temporary
 *       folder, loaded, and deleted again;
 *   <li>on {@code java.library.path} ({@code System.loadLibrary("attnkit_java")}).
 * </ol>
 *
 * Each source lists its libraries in dependency order in a {@code libraries.txt}. After loading,
 * the library's ABI version must equal {@link #ABI_VERSION}, else every use of attnkit throws an
 * {@link AttnKitException} with {@link AttnKitException.Code#FAILED_PRECONDITION}. Every public
 * class loads the library on first use; {@link #load()} does it explicitly.
 */
public final class AttnKit {
  /** The C ABI major version this binding was built against (attnkit.h's ATTNKIT_ABI_VERSION). */
  public static final int ABI_VERSION = AttnKitNative.ATTNKIT_ABI_VERSION;

  static final String DIR_PROPERTY = "attnkit.native.dir";
  static final String DIR_ENVIRONMENT = "ATTNKIT_JAVA_NATIVE_DIR";
  static final String LIBRARY_LIST = "libraries.txt";

  private static final Object LOCK = new Object();
  private static volatile String loadedFrom;
  private static AttnKitException failure;

  private AttnKit() {}

  /**
   * Loads and checks the native library once; throws the same failure on every later call.
   *
   * @throws AttnKitException FAILED_PRECONDITION when the native library cannot be found or loaded,
   *     or its ABI version is not {@link #ABI_VERSION}
   */
  public static void load() {
    if (loadedFrom != null) return;
    synchronized (LOCK) {
      if (loadedFrom != null) return;
      if (failure != null) {
        throw new AttnKitException(failure.code(), failure.statusMessage(), failure);
      }
      try {
        String from = loadLibraries();
        checkAbi(AttnKitNative.attnkit_abi_version(), ABI_VERSION);
        loadedFrom = from;
      } catch (AttnKitException e) {
        failure = e;
        throw e;
      } catch (IOException | LinkageError | SecurityException e) {
        failure =
            new AttnKitException(
                AttnKitException.Code.FAILED_PRECONDITION,
                "cannot load the attnkit native library: " + e,
                e);
        throw failure;
      }
    }
  }

  /**
   * Where the native library was loaded from, loading it first if needed.
   *
   * @return "directory " and the folder, "jar " and the jar's resource folder, or
   *     "java.library.path"
   * @throws AttnKitException as {@link #load()}
   */
  public static String nativeLibrarySource() {
    load();
    return loadedFrom;
  }

  /**
   * The loaded library's ABI major version, loading it first if needed.
   *
   * @return the library's ABI version (equal to {@link #ABI_VERSION} once loaded)
   * @throws AttnKitException as {@link #load()}
   */
  public static int abiVersion() {
    load();
    return AttnKitNative.attnkit_abi_version();
  }

  /**
   * The loaded library's version, loading it first if needed.
   *
   * @return the library's release, e.g. "0.1.0"
   * @throws AttnKitException as {@link #load()}
   */
  public static String version() {
    load();
    return AttnKitNative.attnkit_version_string();
  }

  /**
   * Sets how many threads every computing call of the library uses from now on, in every thread: 1
   * to 1024, or 0 (the default) for the OpenMP default (OMP_NUM_THREADS, else one per core). The
   * calling thread's own OpenMP setting is given back after each call.
   *
   * @param numThreads threads per call, 1 to 1024, or 0 for the OpenMP default
   * @throws AttnKitException INVALID_ARGUMENT outside [0, 1024]; as {@link #load()}
   */
  public static void setNumThreads(int numThreads) {
    load();
    AttnKitNative.attnkit_set_num_threads(numThreads);
  }

  /**
   * The thread count computing calls use.
   *
   * @return the value last given to {@link #setNumThreads} (0: the default)
   * @throws AttnKitException as {@link #load()}
   */
  public static int numThreads() {
    load();
    return AttnKitNative.attnkit_get_num_threads();
  }

  /** Throws unless the library's ABI version {@code library} is the binding's {@code binding}. */
  static void checkAbi(int library, int binding) {
    if (library != binding) {
      throw new AttnKitException(
          AttnKitException.Code.FAILED_PRECONDITION,
          "libattnkit has ABI version "
              + library
              + " but this attnkit jar was built for ABI version "
              + binding
              + "; use the libattnkit.so."
              + binding
              + " that came with it");
    }
  }

  /** The jar's resource folder for this platform, e.g. "dev/attnkit/native/linux-x86_64". */
  static String resourceFolder() {
    String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
    String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
    if (os.startsWith("linux")) os = "linux";
    if (arch.equals("amd64")) arch = "x86_64";
    return "dev/attnkit/native/" + os + "-" + arch;
  }

  private static String loadLibraries() throws IOException {
    String dir = System.getProperty(DIR_PROPERTY);
    if (dir == null || dir.isEmpty()) dir = System.getenv(DIR_ENVIRONMENT);
    if (dir != null && !dir.isEmpty()) {
      Path folder = Paths.get(dir).toAbsolutePath();
      List<String> names = Files.readAllLines(folder.resolve(LIBRARY_LIST), StandardCharsets.UTF_8);
      for (String name : nonEmpty(names)) System.load(folder.resolve(name).toString());
      return "directory " + folder;
    }
    String folder = resourceFolder();
    ClassLoader loader = AttnKit.class.getClassLoader();
    try (InputStream list = loader.getResourceAsStream(folder + "/" + LIBRARY_LIST)) {
      if (list != null) {
        List<String> names =
            nonEmpty(List.of(new String(list.readAllBytes(), StandardCharsets.UTF_8).split("\n")));
        extractAndLoad(loader, folder, names);
        return "jar " + folder;
      }
    }
    System.loadLibrary("attnkit_java");
    return "java.library.path";
  }

  /** Copies the libraries out of the jar, loads them in order and deletes the copies (the loaded
   * mappings stay valid on Linux). */
  private static void extractAndLoad(ClassLoader loader, String folder, List<String> names)
      throws IOException {
    Path temp = Files.createTempDirectory("attnkit-native");
    List<Path> written = new ArrayList<>();
    try {
      for (String name : names) {
        Path target = temp.resolve(name);
        try (InputStream in = loader.getResourceAsStream(folder + "/" + name)) {
          if (in == null) throw new IOException("the jar lists " + name + " but does not carry it");
          Files.copy(in, target, StandardCopyOption.REPLACE_EXISTING);
        }
        written.add(target);
      }
      for (Path library : written) System.load(library.toString());
    } finally {
      for (Path file : written) Files.deleteIfExists(file);
      Files.deleteIfExists(temp);
    }
  }

  private static List<String> nonEmpty(List<String> lines) {
    List<String> names = new ArrayList<>();
    for (String line : lines) {
      if (!line.trim().isEmpty()) names.add(line.trim());
    }
    return names;
  }
}
