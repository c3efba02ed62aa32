from django.urls import include, path
from rest_framework.routers import SimpleRouter

from contacts.views import ContactViewSet

router = SimpleRouter()
# `/contacts` and `/contacts/` both work: APPEND_SLASH would answer a POST without the slash with a
# redirect that clients follow as a GET (or with a 500 under DEBUG), losing the body.
router.trailing_slash = "/?"
router.register("contacts", ContactViewSet, basename="contact")

urlpatterns = [path("", include(router.urls))]
