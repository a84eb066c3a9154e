"""The login pages' words in Vietnamese (default) and English (``ui_locales``)."""

from __future__ import annotations

LOCALES = ("vi", "en")

TEXT: dict[str, dict[str, str]] = {
    "vi": {
        "title": "Đăng nhập tài khoản định danh điện tử",
        "login_heading": "Đăng nhập",
        "login_intro": "{client} yêu cầu đăng nhập bằng tài khoản định danh điện tử.",
        "id_number": "Số định danh cá nhân",
        "password": "Mật khẩu",
        "sign_in": "Đăng nhập",
        "login_failed": "Số định danh hoặc mật khẩu không đúng. Sau 5 lần nhập sai liên tiếp, đăng nhập bị tạm dừng 15 phút.",
        "change_heading": "Đổi mật khẩu",
        "change_intro": "Mật khẩu được gửi qua SMS chỉ dùng một lần. Hãy đặt mật khẩu của riêng bạn (ít nhất {min} ký tự).",
        "current_password": "Mật khẩu hiện tại",
        "new_password": "Mật khẩu mới",
        "change": "Đổi mật khẩu",
        "consent_heading": "Cho phép chia sẻ thông tin",
        "consent_intro": "{client} sẽ nhận các thông tin sau của {who}:",
        "allow": "Đồng ý",
        "deny": "Từ chối",
        "subject_heading": "Bạn đăng nhập cho ai?",
        "subject_intro": "Bạn có thể thay mặt người phụ thuộc dưới 14 tuổi.",
        "myself": "Cho chính tôi",
        "continue": "Tiếp tục",
        "you": "bạn",
        "error_heading": "Không thể tiếp tục",
        "logout_heading": "Đăng xuất",
        "logout_confirm": "Bạn có muốn đăng xuất khỏi tài khoản định danh điện tử?",
        "logout": "Đăng xuất",
        "logged_out": "Bạn đã đăng xuất.",
        "scope_openid": "Mã định danh của bạn với dịch vụ này",
        "scope_profile": "Họ tên, ngày sinh, giới tính",
        "scope_phone": "Số điện thoại",
        "scope_email": "Thư điện tử",
        "scope_address": "Nơi cư trú",
        "scope_national_id": "Số định danh cá nhân",
        "scope_documents": "Giấy tờ đã tích hợp",
        "scope_offline_access": "Truy cập khi bạn không trực tuyến",
        "expired": "Yêu cầu đăng nhập đã hết hạn. Hãy quay lại dịch vụ và thử lại.",
    },
    "en": {
        "title": "Sign in with your e-ID account",
        "login_heading": "Sign in",
        "login_intro": "{client} asks you to sign in with your e-ID account.",
        "id_number": "Personal ID number",
        "password": "Password",
        "sign_in": "Sign in",
        "login_failed": "The ID number or password is wrong. After 5 wrong passwords in a row, sign-in is paused for 15 minutes.",
        "change_heading": "Change your password",
        "change_intro": "The password sent by SMS works once. Choose your own (at least {min} characters).",
        "current_password": "Current password",
        "new_password": "New password",
        "change": "Change password",
        "consent_heading": "Allow sharing",
        "consent_intro": "{client} will receive this information about {who}:",
        "allow": "Allow",
        "deny": "Deny",
        "subject_heading": "Who are you signing in for?",
        "subject_intro": "You can act for your dependents under 14.",
        "myself": "Myself",
        "continue": "Continue",
        "you": "you",
        "error_heading": "Cannot continue",
        "logout_heading": "Sign out",
        "logout_confirm": "Do you want to sign out of your e-ID account?",
        "logout": "Sign out",
        "logged_out": "You are signed out.",
        "scope_openid": "Your identifier for this service",
        "scope_profile": "Name, date of birth, sex",
        "scope_phone": "Phone number",
        "scope_email": "Email",
        "scope_address": "Place of residence",
        "scope_national_id": "Personal ID number",
        "scope_documents": "Integrated documents",
        "scope_offline_access": "Access while you are offline",
        "expired": "The sign-in request expired. Go back to the service and try again.",
    },
}


def pick_locale(ui_locales: str | None) -> str:
    for tag in (ui_locales or "").split():
        base = tag.split("-")[0].lower()
        if base in LOCALES:
            return base
    return "vi"
