/** Base of every error the mesh package throws: branch on `code`. */
export class MeshError extends Error {
  override readonly name: string = 'MeshError'
  readonly code: string

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}

/** The node's identity key cannot be read, is corrupt, or is exposed to other users. */
export class IdentityError extends MeshError {
  override readonly name = 'IdentityError'
}
