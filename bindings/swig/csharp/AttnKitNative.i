/* The C# module: SWIG generates AttnKit.Native.AttnKitNative (internal) and libattnkit_csharp. */
%module AttnKitNative
%include "attnkit_csharp.i"
