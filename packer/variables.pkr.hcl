# Inputs of the pgappliance VM template. Every one can be set with -var NAME=VALUE or a -var-file;
# packer/build-base-qcow2.sh writes a var file for its local base image. See packer/README.md.

variable "base_image" {
  type        = string
  description = "URL or local path of a bootable Debian bookworm disk (qcow2): packer/build-base-qcow2.sh's output, or Debian's debian-12-genericcloud-amd64.qcow2."
}

variable "base_image_checksum" {
  type        = string
  description = "Checksum of base_image: sha256:<hex>, sha512:<hex>, file:<URL or path of a SHA512SUMS file>, or none (not recommended)."
}

variable "disk_size" {
  type        = string
  default     = "8G"
  description = "Virtual size of the appliance's disk (the base image grows to it; PostgreSQL's data lives on it)."
}

variable "output_directory" {
  type        = string
  default     = "output/pgappliance"
  description = "Where the qcow2 and its checksum go; must not exist yet (or pass -force)."
}

variable "vm_name" {
  type        = string
  default     = "pgappliance.qcow2"
  description = "File name of the disk image in output_directory."
}

variable "headless" {
  type        = bool
  default     = true
  description = "No QEMU window during the build (VNC still listens on 127.0.0.1)."
}

variable "accelerator" {
  type        = string
  default     = "kvm"
  description = "QEMU accelerator: kvm when /dev/kvm works, tcg (software, slow but everywhere), hvf on macOS, whpx on Windows."

  validation {
    condition     = contains(["kvm", "tcg", "hvf", "whpx", "hax", "none"], var.accelerator)
    error_message = "The accelerator must be one of kvm, tcg, hvf, whpx, hax, none."
  }
}

variable "memory" {
  type        = number
  default     = 2048
  description = "Memory of the build VM in MiB."
}

variable "cpus" {
  type        = number
  default     = 2
  description = "vCPUs of the build VM."
}

variable "ssh_username" {
  type        = string
  default     = "packer"
  description = "The build user: password-less sudo, created by build-base-qcow2.sh or by the cloud-init seed given in cd_files."
}

variable "ssh_private_key_file" {
  type        = string
  default     = ""
  description = "Private key of the build user (build-base-qcow2.sh generates one)."
}

variable "ssh_password" {
  type        = string
  default     = ""
  sensitive   = true
  description = "Password of the build user, when it has no key."
}

variable "ssh_timeout" {
  type        = string
  default     = "20m"
  description = "How long to wait for the first SSH login (software emulation boots slowly)."
}

variable "cd_files" {
  type        = list(string)
  default     = []
  description = "Files for a CD attached during the build, e.g. a cloud-init NoCloud seed (user-data, meta-data) that creates the build user on a cloud image. Needs xorriso, mkisofs or genisoimage on the host."
}

variable "cd_label" {
  type        = string
  default     = "cidata"
  description = "Volume label of that CD (cidata: cloud-init's NoCloud)."
}

variable "wheelhouse" {
  type        = string
  default     = ""
  description = "A host directory of wheels for the appliance's Python dependencies: the VM installs offline from it. Empty: packer/wheelhouse/, and the VM downloads from PyPI when that holds no wheel."
}

variable "serial_log" {
  type        = string
  default     = ""
  description = "A host file that receives the build VM's serial console (boot messages), for debugging. Empty: none."
}
