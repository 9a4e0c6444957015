/** Media types ferry reads and writes (OCI image spec and Docker distribution schema 2). */
export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociLayerNondistributable: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  ociLayerNondistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  ociLayerNondistributableZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayerZstd: 'application/vnd.docker.image.rootfs.diff.tar.zstd',
  dockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

export type Compression = 'none' | 'gzip' | 'zstd';

/** The Accept header for manifest requests: every type ferry can read, images and indexes. */
export const MANIFEST_ACCEPT = [
  MediaType.ociManifest,
  MediaType.ociIndex,
  MediaType.dockerManifest,
  MediaType.dockerManifestList,
];

export function isIndexMediaType(mediaType: string): boolean {
  return mediaType === MediaType.ociIndex || mediaType === MediaType.dockerManifestList;
}

export function isImageManifestMediaType(mediaType: string): boolean {
  return mediaType === MediaType.ociManifest || mediaType === MediaType.dockerManifest;
}

export function isSchema1MediaType(mediaType: string): boolean {
  return mediaType === MediaType.dockerSchema1 || mediaType === MediaType.dockerSchema1Signed;
}

export function isForeignLayer(mediaType: string): boolean {
  return (
    mediaType === MediaType.dockerForeignLayerGzip ||
    mediaType.startsWith('application/vnd.oci.image.layer.nondistributable.')
  );
}

/** How a layer blob of this media type is compressed, or undefined when it is not a layer type. */
export function layerCompression(mediaType: string): Compression | undefined {
  switch (mediaType) {
    case MediaType.ociLayer:
    case MediaType.dockerLayer:
    case MediaType.ociLayerNondistributable:
      return 'none';
    case MediaType.ociLayerGzip:
    case MediaType.dockerLayerGzip:
    case MediaType.dockerForeignLayerGzip:
    case MediaType.ociLayerNondistributableGzip:
      return 'gzip';
    case MediaType.ociLayerZstd:
    case MediaType.dockerLayerZstd:
    case MediaType.ociLayerNondistributableZstd:
      return 'zstd';
    default:
      return undefined;
  }
}

/** The layer media type of the same family (OCI or Docker) with another compression. */
export function layerMediaTypeFor(compression: Compression, docker: boolean): string {
  if (docker) {
    return compression === 'none'
      ? MediaType.dockerLayer
      : compression === 'gzip'
        ? MediaType.dockerLayerGzip
        : MediaType.dockerLayerZstd;
  }
  return compression === 'none'
    ? MediaType.ociLayer
    : compression === 'gzip'
      ? MediaType.ociLayerGzip
      : MediaType.ociLayerZstd;
}
